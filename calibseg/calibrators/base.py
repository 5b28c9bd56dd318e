"""Shared machinery of the post-hoc calibrators: input validation, streaming pixel passes and the optimisers.

Conventions (every calibrator):

* **Inputs are logits**, never probabilities: ``(N, K, H, W)`` (any number of spatial dimensions after the class
  dimension) or ``(P, K)`` for flat pixels; labels ``(N, H, W)`` or ``(P,)`` with ``ignore_index`` (a label
  value, 255 by default) excluded from fitting.
* **Streaming**: ``fit`` takes either one in-memory batch (``fit(logits, labels)``) or a *re-iterable* data
  source: a callable returning a fresh iterator (``fit(batches)`` with ``def batches(): yield logits, labels``),
  or an object whose ``__iter__`` returns a fresh iterator on every call (a list, a ``DataLoader``). Each item is
  ``(logits, labels)`` or ``(logits, labels, image)``. One-shot iterators (generators) are rejected because the
  optimisers make several passes.
* **Pixel subsampling**: ``max_pixels_per_image=m`` keeps at most ``m`` non-ignored pixels of every image, drawn
  without replacement with the ``torch.Generator`` passed as ``generator=`` (required then; no global RNG). A
  seed is drawn from that generator once per ``fit`` and every pass re-creates the same selection, so a
  multi-pass optimiser sees a fixed objective. A ``(P, K)`` batch counts as one image.
* **Caching** (``cache=True``, explicit): the first pass stores the selected pixels (float32 logits, int64
  labels) and later passes read them from memory: ``M * (4 K + 8)`` bytes for ``M`` kept pixels, i.e. at most
  ``images * max_pixels_per_image * (4 K + 8)`` with subsampling. Without caching every pass re-reads the
  source and the memory is O(one batch).
* Fitting runs in float64 on the device of the calibrator (``calibrator.to(device)`` first to fit on a GPU);
  the fitted parameters are stored in the module's dtype.
"""
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ['BaseCalibrator', 'DataSource', 'PixelPasses', 'check_logits', 'check_binary_logits', 'check_labels',
           'make_stream',
           'newton_inverse_temperature', 'lbfgs_fit']

Batch = Tuple[Tensor, ...]
DataSource = Union[Tensor, Tuple[Tensor, ...], Callable[[], Iterable[Batch]], Iterable[Batch]]

#: Pixels per chunk in the streaming passes (bounds the float64 working set of a pass to a few tens of MB).
DEFAULT_CHUNK_PIXELS = 1 << 16


# ----------------------------------------------------------------------------------------------- validation
def _shape(t: Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


def check_logits(logits: Any, num_classes: int, *, name: str = 'logits') -> None:
    """Check a logits tensor ``(N, K, *spatial)`` or ``(P, K)`` against ``num_classes``.

    Raises:
        ValueError: not a floating-point tensor, fewer than 2 dimensions, a class dimension (1) of the wrong
            size, or NaN / infinite values.
    """
    if not isinstance(logits, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor, got {type(logits).__name__}')
    if not logits.is_floating_point():
        raise ValueError(f'{name} must be a floating-point tensor of logits, got dtype {logits.dtype}')
    if logits.dim() < 2:
        raise ValueError(f'{name} must have shape (N, K, H, W) or (P, K), got {_shape(logits)}')
    if logits.shape[1] != num_classes:
        raise ValueError(f'{name} of shape {_shape(logits)} has {logits.shape[1]} classes along dimension 1, '
                         f'but the calibrator has num_classes={num_classes}')
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f'{name} contains {bad} NaN or infinite value(s); calibrators need finite logits')


def check_binary_logits(logits: Any, *, name: str = 'logits') -> None:
    """Check one-channel logits: ``(N, 1, *spatial)``, ``(P, 1)``, ``(N, H, W)`` or ``(P,)``.

    A 2-D or 4-D (or higher) tensor must have one channel in dimension 1; 1-D and 3-D tensors are read as maps
    without a channel dimension.

    Raises:
        ValueError: not a floating-point tensor, a channel dimension other than 1, or NaN / infinite values.
    """
    if not isinstance(logits, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor, got {type(logits).__name__}')
    if not logits.is_floating_point():
        raise ValueError(f'{name} must be a floating-point tensor of logits, got dtype {logits.dtype}')
    if logits.dim() == 0:
        raise ValueError(f'{name} must have shape (N, 1, H, W), (N, H, W), (P, 1) or (P,), got a scalar')
    if (logits.dim() == 2 or logits.dim() >= 4) and logits.shape[1] != 1:
        raise ValueError(f'{name} of shape {_shape(logits)} has {logits.shape[1]} channels along dimension 1; '
                         'binary calibrators take one-channel logits (use a multi-class calibrator for K > 1)')
    finite = torch.isfinite(logits)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(f'{name} contains {bad} NaN or infinite value(s); calibrators need finite logits '
                         '(probabilities of exactly 0 or 1 converted with torch.logit give infinities: clamp first)')


def check_labels(labels: Any, logits: Tensor, num_classes: int, ignore_index: Optional[int], *,
                 name: str = 'labels') -> None:
    """Check integer labels of ``logits``' shape without the class dimension, in ``[0, K)`` or ``ignore_index``.

    Raises:
        ValueError: not an integer tensor, a shape mismatch, or a value that is neither a class nor ignored.
    """
    if not isinstance(labels, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor, got {type(labels).__name__}')
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f'{name} must be an integer tensor, got dtype {labels.dtype}')
    expected = _shape(logits)[:1] + _shape(logits)[2:]
    if _shape(labels) != expected:
        raise ValueError(f'{name} of shape {_shape(labels)} do not match logits of shape {_shape(logits)}: '
                         f'expected {expected} (the logits shape without the class dimension 1)')
    out = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        out &= labels != ignore_index
    if bool(out.any()):
        values = torch.unique(labels[out])[:5].tolist()
        raise ValueError(f'{name} contain values outside [0, {num_classes - 1}] that are not '
                         f'ignore_index={ignore_index}: {values}')


def check_positive_int(value: Any, name: str, *, minimum: int = 1, allow_none: bool = False) -> Optional[int]:
    """Return ``value`` if it is an int ``>= minimum`` (or ``None`` when allowed), else raise ``ValueError``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
    return value


def check_positive_float(value: Any, name: str) -> float:
    """Return ``float(value)`` if it is a finite number ``> 0``, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
    return float(value)


def check_bounds(t_min: float, t_max: float) -> Tuple[float, float]:
    """Validate the temperature search interval ``0 < t_min < t_max``."""
    t_min = check_positive_float(t_min, 't_min')
    t_max = check_positive_float(t_max, 't_max')
    if t_min >= t_max:
        raise ValueError(f't_min must be < t_max, got t_min={t_min}, t_max={t_max}')
    return t_min, t_max


# ------------------------------------------------------------------------------------------------ data source
def make_stream(data: DataSource, labels: Optional[Tensor] = None,
                images: Optional[Tensor] = None) -> Callable[[], Iterator[Batch]]:
    """Turn the ``data`` argument of ``fit`` into a function returning a fresh iterator over batches.

    Args:
        data: logits (then ``labels`` is required and the pair is one batch), a tuple ``(logits, labels[,
            image])`` (one batch), a callable returning an iterator over batches, or a re-iterable object.
        labels: labels of in-memory ``data`` logits.
        images: images of in-memory ``data`` logits (local temperature scaling with ``use_image=True``).

    Raises:
        ValueError: missing or superfluous ``labels``/``images``, or a one-shot iterator.
    """
    if isinstance(data, Tensor):
        if labels is None:
            raise ValueError('labels is required when data is a logits tensor: call fit(logits, labels)')
        batch = (data, labels) if images is None else (data, labels, images)
        return lambda: iter([batch])
    if labels is not None or images is not None:
        raise ValueError('labels/images may only be given with a logits tensor as data; a data source yields '
                         '(logits, labels[, image]) batches itself')
    if isinstance(data, tuple) and len(data) > 0 and isinstance(data[0], Tensor):
        batch = data
        return lambda: iter([batch])
    if callable(data) and not hasattr(data, '__iter__'):
        return lambda: iter(data())
    if not hasattr(data, '__iter__'):
        raise ValueError(f'data must be a logits tensor, a (logits, labels) tuple, a callable returning an '
                         f'iterator or a re-iterable object, got {type(data).__name__}')
    if iter(data) is data:
        raise ValueError('data is a one-shot iterator (e.g. a generator); fitting makes several passes: pass a '
                         'function returning a fresh iterator instead (fit(batches), not fit(batches()))')
    return lambda: iter(data)


def unpack_batch(batch: Any, index: int) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Split one item of a data source into ``(logits, labels, image or None)``."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError(f'batch {index} of the data source must be a tuple (logits, labels) or '
                         f'(logits, labels, image), got {type(batch).__name__}'
                         + (f' of length {len(batch)}' if isinstance(batch, (tuple, list)) else ''))
    image = batch[2] if len(batch) == 3 else None
    return batch[0], batch[1], image


class PixelPasses:
    """Repeatable passes over the non-ignored (optionally subsampled) pixels of a data source.

    Iterating yields ``(z, y)`` chunks, ``z`` of shape ``(P, K)`` in ``dtype`` and ``y`` of shape ``(P,)``
    (int64), at most ``chunk_pixels`` pixels each. Memory: one source batch plus one chunk, or the cache (see the
    module docstring). After the first pass ``num_pixels``, ``num_images`` and ``class_counts`` hold the counts
    (the selected pixels, after ignoring and subsampling); later passes must
    yield the same number of pixels (the source must be deterministic), else ``ValueError``.

    Args:
        stream: a function returning a fresh iterator of batches (see :func:`make_stream`).
        num_classes: K (1 for the binary calibrators, whose logits may also lack the channel dimension).
        ignore_index: label value excluded from fitting, or ``None``.
        max_pixels_per_image: keep at most this many valid pixels per image (``None``: all).
        generator: the random source of the subsampling (required with ``max_pixels_per_image``).
        cache: keep the selected pixels in memory after the first pass.
        dtype: dtype of the yielded logits.
        device: device of the yielded tensors.
        chunk_pixels: pixels per yielded chunk.
        binary: labels are {0, 1} and logits may be ``labels.shape`` (one channel without its dimension).
    """

    def __init__(self, stream: Callable[[], Iterator[Batch]], *, num_classes: int, ignore_index: Optional[int],
                 max_pixels_per_image: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 cache: bool = False, dtype: torch.dtype = torch.float64, device: Union[str, torch.device] = 'cpu',
                 chunk_pixels: int = DEFAULT_CHUNK_PIXELS, binary: bool = False) -> None:
        self.stream = stream
        self.num_classes = num_classes
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise ValueError(f'ignore_index must be an int or None, got {ignore_index!r}')
        self.ignore_index = ignore_index
        self.max_pixels = check_positive_int(max_pixels_per_image, 'max_pixels_per_image', allow_none=True)
        if self.max_pixels is not None and not isinstance(generator, torch.Generator):
            raise ValueError('max_pixels_per_image needs an explicit torch.Generator as generator= (calibseg never '
                             f'uses the global RNG), got generator={generator!r}')
        # One seed per fit: every pass rebuilds the same generator and therefore the same pixel selection.
        self.seed = (int(torch.randint(0, 2 ** 62, (1,), generator=generator).item())
                     if self.max_pixels is not None else None)
        self.cache = bool(cache)
        self.dtype = dtype
        self.device = torch.device(device)
        self.chunk_pixels = check_positive_int(chunk_pixels, 'chunk_pixels')
        self.binary = binary
        self.num_pixels: Optional[int] = None
        self.num_images: Optional[int] = None
        self.class_counts: Optional[Tensor] = None  # labelled pixels per class (per label value when binary)
        self.passes = 0
        self._cached: Optional[List[Tuple[Tensor, Tensor]]] = None

    def _batch_pixels(self, logits: Tensor, labels: Tensor, generator: Optional[torch.Generator],
                      index: int) -> Tuple[Tensor, Tensor, int]:
        if self.binary:
            check_binary_logits(logits, name=f'logits of batch {index}')
            if isinstance(labels, Tensor) and logits.shape == labels.shape:
                logits = logits.unsqueeze(1)  # (N, H, W) or (P,): one channel without its dimension
        check_logits(logits, self.num_classes, name=f'logits of batch {index}')
        check_labels(labels, logits, 2 if self.binary else self.num_classes, self.ignore_index,
                     name=f'labels of batch {index}')
        if logits.dim() == 2:  # (P, K): one "image"
            z3, y2 = logits.t().unsqueeze(0), labels.unsqueeze(0)
        else:
            z3 = logits.reshape(logits.shape[0], self.num_classes, -1)
            y2 = labels.reshape(labels.shape[0], -1)
        zs, ys = [], []
        for n in range(z3.shape[0]):
            y = y2[n]
            idx = (y != self.ignore_index).nonzero().squeeze(1) if self.ignore_index is not None else None
            count = y.numel() if idx is None else idx.numel()
            if self.max_pixels is not None and count > self.max_pixels:
                pick = torch.randperm(count, generator=generator)[:self.max_pixels].to(y.device)
                idx = pick if idx is None else idx[pick]
                idx = idx.sort().values  # keep memory order (and the same pixels whatever the pick order)
            if idx is None:
                zs.append(z3[n].t())
                ys.append(y)
            else:
                zs.append(z3[n][:, idx].t())
                ys.append(y[idx])
        return torch.cat(zs), torch.cat(ys).long(), z3.shape[0]

    def _read_source(self) -> Iterator[Tuple[Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed) if self.seed is not None else None
        pixels = images = 0
        store: Optional[List[Tuple[Tensor, Tensor]]] = [] if self.cache else None
        first = self.num_pixels is None
        counts = torch.zeros(2 if self.binary else self.num_classes, dtype=torch.int64)
        for index, batch in enumerate(self.stream()):
            logits, labels, _ = unpack_batch(batch, index)
            z, y, n_img = self._batch_pixels(logits, labels, generator, index)
            images += n_img
            pixels += y.numel()
            if y.numel() == 0:
                continue
            if first:
                counts += torch.bincount(y.cpu(), minlength=counts.numel())
            if store is not None:
                store.append((z.detach().to('cpu', torch.float32).contiguous(), y.cpu()))
            for start in range(0, y.numel(), self.chunk_pixels):
                yield (z[start:start + self.chunk_pixels].to(self.device, self.dtype),
                       y[start:start + self.chunk_pixels].to(self.device))
        if self.num_pixels is None:
            if pixels == 0:
                raise ValueError('the data source yielded no labelled pixels (empty, or every label is '
                                 f'ignore_index={self.ignore_index})')
            self.num_pixels, self.num_images, self.class_counts = pixels, images, counts
        elif pixels != self.num_pixels:
            raise ValueError(f'the data source yielded {pixels} labelled pixels on pass {self.passes + 1} but '
                             f'{self.num_pixels} on pass 1: it must yield the same data on every call')
        if store is not None:
            self._cached = store

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        if self._cached is not None:
            for z, y in self._cached:
                for start in range(0, y.numel(), self.chunk_pixels):
                    yield (z[start:start + self.chunk_pixels].to(self.device, self.dtype),
                           y[start:start + self.chunk_pixels].to(self.device))
        else:
            yield from self._read_source()
        self.passes += 1


# ------------------------------------------------------------------------------------------------- optimisers
def newton_inverse_temperature(stats: Callable[[float], Tuple[float, float, float]], *, t_min: float,
                               t_max: float, tol: float = 1e-8, max_iter: int = 100
                               ) -> Tuple[float, Dict[str, Any]]:
    """Minimise a convex objective ``f(beta)`` of the inverse temperature ``beta = 1 / T`` on ``[1/t_max, 1/t_min]``.

    Safeguarded Newton: each call of ``stats(beta)`` is one pass over the data and returns ``(f, f', f'')``
    (sums over pixels). The sign of ``f'`` shrinks a bracket around the minimiser; a Newton step that leaves the
    bracket (or a non-positive ``f''``) is replaced by the bracket's geometric midpoint. It stops when a step
    changes ``beta`` by at most ``tol * beta``; a minimiser outside the interval ends at the nearest bound.
    The NLL of temperature scaling and the BCE of binary temperature scaling are convex in ``beta`` because the
    scaled logits ``beta * z`` are linear in it.

    Returns:
        ``(beta, info)`` with ``info = {'passes', 'objective_at_start', 'objective', 'converged'}`` (objective
        values as returned by ``stats``: sums, not means).
    """
    lo, hi = 1.0 / t_max, 1.0 / t_min
    beta = min(max(1.0, lo), hi)
    info: Dict[str, Any] = {'passes': 0, 'objective_at_start': None, 'objective': None, 'converged': False}
    for _ in range(max_iter):
        f, g, h = stats(beta)
        info['passes'] += 1
        if info['objective_at_start'] is None:
            info['objective_at_start'] = f
        info['objective'] = f
        if g > 0:
            hi = beta
        elif g < 0:
            lo = beta
        else:
            info['converged'] = True
            break
        step = beta - g / h if h > 0 else math.nan
        if not lo < step < hi:
            step = math.sqrt(lo * hi)
        done = abs(step - beta) <= tol * beta or hi <= lo * (1.0 + tol)
        beta = step
        if done:
            info['converged'] = True
            break
    return beta, info


def lbfgs_fit(params: Sequence[Tensor], chunk_loss: Callable[[Tensor, Tensor], Tensor], passes: PixelPasses, *,
              max_iter: int = 100, tolerance_grad: float = 1e-9) -> Dict[str, Any]:
    """Minimise the mean per-pixel loss over a stream with L-BFGS (strong Wolfe line search).

    Every closure evaluation is one pass: ``chunk_loss(z, y)`` returns the *summed* loss of a chunk, whose
    gradient is accumulated chunk by chunk, then loss and gradients are divided by the pixel count. Memory:
    one chunk's autograd graph (or the cache of ``passes``), never the whole data set.

    Args:
        params: float64 leaf tensors with ``requires_grad=True``; updated in place.
        chunk_loss: summed loss of a ``(z, y)`` chunk as a differentiable scalar.
        passes: the pixel source.
        max_iter: L-BFGS iterations (each costs one or more passes).
        tolerance_grad: stop when the largest gradient entry is below this.

    Returns:
        ``{'passes', 'objective_at_start', 'objective'}`` (mean losses).
    """
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, max_eval=max_iter * 2,
                                  tolerance_grad=tolerance_grad, tolerance_change=1e-14, history_size=20,
                                  line_search_fn='strong_wolfe')
    info: Dict[str, Any] = {'passes': 0, 'objective_at_start': None, 'objective': None}

    def closure() -> Tensor:
        optimizer.zero_grad()
        total, count = 0.0, 0
        for z, y in passes:
            loss = chunk_loss(z, y)
            loss.backward()
            total += float(loss.detach())
            count += y.numel()
        for p in params:
            p.grad.div_(count)
        info['passes'] += 1
        mean = total / count
        if info['objective_at_start'] is None:
            info['objective_at_start'] = mean
        info['objective'] = mean
        return torch.tensor(mean, dtype=torch.float64)

    optimizer.step(closure)
    return info


# ------------------------------------------------------------------------------------------------ base class
class BaseCalibrator(nn.Module):
    """A post-hoc calibrator: ``fit(...)`` on validation logits, then ``forward(logits)`` returns calibrated logits.

    Subclasses set ``method`` (the name written by :func:`~calibseg.calibrators.io.save_calibrator`, equal to the
    class name), implement ``fit``, ``_calibrate``, ``get_config`` and ``describe``. The ``is_fitted`` buffer
    travels with ``state_dict``, so a loaded calibrator knows whether it was fitted; ``fit_info`` (not saved)
    holds the pixel counts, passes and objective values of the last ``fit``.

    Args:
        num_classes: K, the number of logit channels (1 for the binary calibrators).
    """

    method: str = ''

    def __init__(self, *, num_classes: int) -> None:
        super().__init__()
        self.num_classes = check_positive_int(num_classes, 'num_classes')
        self.register_buffer('is_fitted', torch.tensor(False))
        self.fit_info: Dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        """Whether ``fit`` (or ``load_state_dict`` of a fitted calibrator) has set the parameters."""
        return bool(self.is_fitted)

    def _mark_fitted(self) -> None:
        self.is_fitted.fill_(True)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f'{type(self).__name__} is not fitted: call fit(...) or load a fitted state_dict '
                               'before calibrating logits')

    @property
    def _device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device('cpu')

    def get_config(self) -> Dict[str, Any]:
        """The keyword arguments that rebuild this calibrator (without its fitted state)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line with the fitted values (or ``unfitted``)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.describe()

    def _calibrate(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor) -> Tensor:
        """Calibrated logits of the same shape as ``logits`` (``(N, K, *spatial)`` or ``(P, K)``).

        Raises:
            RuntimeError: the calibrator is not fitted.
            ValueError: invalid logits (see :func:`check_logits`).
        """
        self._check_fitted()
        check_logits(logits, self.num_classes)
        return self._calibrate(logits)

    def _passes(self, data: DataSource, labels: Optional[Tensor], *, ignore_index: Optional[int],
                max_pixels_per_image: Optional[int], generator: Optional[torch.Generator], cache: bool,
                binary: bool = False, dtype: torch.dtype = torch.float64) -> PixelPasses:
        return PixelPasses(make_stream(data, labels), num_classes=self.num_classes, ignore_index=ignore_index,
                           max_pixels_per_image=max_pixels_per_image, generator=generator, cache=cache,
                           dtype=dtype, device=self._device, binary=binary)


class BinaryCalibrator(BaseCalibrator):
    """Base of the calibrators of one-channel heads (``num_classes = 1``, labels in ``{0, 1}``).

    They take **logits**. mmseg's one-channel heads store sigmoid *probabilities* in ``seg_logits`` (saturating
    to exactly 0 or 1 in float32), so a caller either keeps the pre-sigmoid logits (preferred) or converts with
    ``torch.logit(p.double().clamp(eps, 1 - eps))``, which cannot recover saturated values.
    Logits may be ``(N, 1, *spatial)``, ``(P, 1)``, or ``(N, H, W)`` / ``(P,)`` without the channel dimension;
    ``forward`` returns the input's shape.
    """

    def __init__(self) -> None:
        super().__init__(num_classes=1)

    def forward(self, logits: Tensor) -> Tensor:
        """Calibrated logits of the shape of ``logits`` (see the class docstring for the accepted shapes)."""
        self._check_fitted()
        check_binary_logits(logits)
        return self._calibrate(logits)

    def _binary_passes(self, data: DataSource, labels: Optional[Tensor], *, ignore_index: Optional[int],
                       max_pixels_per_image: Optional[int], generator: Optional[torch.Generator],
                       cache: bool) -> PixelPasses:
        return self._passes(data, labels, ignore_index=ignore_index, max_pixels_per_image=max_pixels_per_image,
                            generator=generator, cache=cache, binary=True)
