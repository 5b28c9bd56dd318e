"""Data streaming of the post-hoc calibrators: input checks, data sources, pixel subsampling and repeatable passes.

Conventions (every calibrator):

* **Inputs are logits**, never probabilities: ``(N, K, H, W)`` (any number of spatial dimensions after the class
  dimension) or ``(P, K)`` for flat pixels; labels ``(N, H, W)`` or ``(P,)`` with ``ignore_index`` (a label
  value, 255 by default) excluded from fitting.
* **Streaming**: ``fit`` takes either one in-memory batch (``fit(logits, labels)``) or a *re-iterable* data
  source: a callable returning a fresh iterator (``fit(batches)`` with ``def batches(): yield logits, labels``),
  or an object whose ``__iter__`` returns a fresh iterator on every call (a list, a ``DataLoader``). Each item is
  ``(logits, labels)`` or ``(logits, labels, image)``. One-shot iterators (generators) are rejected because the
  optimisers make several passes.
* **Pixel subsampling** (:func:`select_pixels`): ``max_pixels_per_image=m`` keeps at most ``m`` non-ignored pixels
  of every image, drawn without replacement with the ``torch.Generator`` passed as ``generator=`` (required then;
  no global RNG). A seed is drawn from that generator once per ``fit`` and every pass re-creates the same
  selection, so a multi-pass optimiser sees a fixed objective. A ``(P, K)`` batch counts as one image.
* **Caching** (``cache=True``, explicit): the first pass stores the selected pixels (float32 logits, int64
  labels) and later passes read them from memory: ``M * (4 K + 8)`` bytes for ``M`` kept pixels, i.e. at most
  ``images * max_pixels_per_image * (4 K + 8)`` with subsampling. Without caching every pass re-reads the
  source and the memory is O(one batch).
* Fitting runs in float64 on the device of the calibrator (``calibrator.to(device)`` first to fit on a GPU);
  the fitted parameters are stored in the module's dtype.
"""
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor

from ..utils.validation import check_binary_logits, check_int, check_labels, check_logits, check_positive_int

__all__ = ['Batch', 'DataSource', 'DEFAULT_CHUNK_PIXELS', 'PixelPasses', 'check_logits', 'check_binary_logits',
           'make_stream', 'unpack_batch', 'select_pixels']

Batch = Tuple[Tensor, ...]
DataSource = Union[Tensor, Tuple[Tensor, ...], Callable[[], Iterable[Batch]], Iterable[Batch]]

#: Pixels per chunk in the streaming passes (bounds the float64 working set of a pass to a few tens of MB).
DEFAULT_CHUNK_PIXELS = 1 << 16


def _shape(t: Tensor) -> Tuple[int, ...]:
    return tuple(t.shape)


def select_pixels(logits: Tensor, labels: Tensor, *, ignore_index: Optional[int],
                  max_pixels: Optional[int] = None, generator: Optional[torch.Generator] = None
                  ) -> Tuple[Tensor, Tensor]:
    """The labelled pixels of ONE image as flat ``(P, K)`` logits and ``(P,)`` int64 labels, optionally subsampled.

    Pixels whose label is ``ignore_index`` are dropped; if more than ``max_pixels`` remain, ``max_pixels`` of
    them are drawn without replacement (``torch.randperm`` with ``generator``) and kept in memory order. This is
    calibseg's one pixel-subsampling rule (post-hoc fitting, the calibrators' passes and the study use it).

    Args:
        logits: ``(K, *spatial)`` logits of one image (any dtype and device; returned as they are).
        labels: ``(*spatial)`` integer labels.
        ignore_index: label value to drop, or ``None``.
        max_pixels: keep at most this many pixels (``None``: all).
        generator: the random source of the draw (required when a draw happens).

    Example:
        >>> z = torch.arange(12.).view(2, 2, 3)
        >>> y = torch.tensor([[0, 1, 255], [1, 0, 1]])
        >>> zs, ys = select_pixels(z, y, ignore_index=255)
        >>> zs.shape, ys.tolist()
        (torch.Size([5, 2]), [0, 1, 1, 0, 1])
        >>> zs, ys = select_pixels(z, y, ignore_index=255, max_pixels=2, generator=torch.Generator().manual_seed(0))
        >>> zs.shape
        torch.Size([2, 2])
    """
    z = logits.reshape(logits.shape[0], -1)
    y = labels.reshape(-1)
    idx = (y != ignore_index).nonzero().squeeze(1) if ignore_index is not None else None
    count = y.numel() if idx is None else idx.numel()
    if max_pixels is not None and count > max_pixels:
        if not isinstance(generator, torch.Generator):
            raise ValueError('select_pixels needs a torch.Generator to subsample (calibseg never uses the global '
                             f'RNG), got generator={generator!r}')
        pick = torch.randperm(count, generator=generator)[:max_pixels].to(y.device)
        idx = pick if idx is None else idx[pick]
        idx = idx.sort().values  # keep memory order (and the same pixels whatever the pick order)
    if idx is None:
        return z.t(), y.long()
    return z[:, idx].t(), y[idx].long()


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
        allow_empty: a source without labelled pixels is accepted (a process's share of a distributed fit,
            whose statistics are summed across processes); otherwise it raises ``ValueError``.
    """

    def __init__(self, stream: Callable[[], Iterator[Batch]], *, num_classes: int, ignore_index: Optional[int],
                 max_pixels_per_image: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 cache: bool = False, dtype: torch.dtype = torch.float64, device: Union[str, torch.device] = 'cpu',
                 chunk_pixels: int = DEFAULT_CHUNK_PIXELS, binary: bool = False, allow_empty: bool = False) -> None:
        self.stream = stream
        self.num_classes = num_classes
        self.ignore_index = check_int('ignore_index', ignore_index, allow_none=True)
        self.max_pixels = check_positive_int('max_pixels_per_image', max_pixels_per_image, allow_none=True)
        if self.max_pixels is not None and not isinstance(generator, torch.Generator):
            raise ValueError('max_pixels_per_image needs an explicit torch.Generator as generator= (calibseg never '
                             f'uses the global RNG), got generator={generator!r}')
        # One seed per fit: every pass rebuilds the same generator and therefore the same pixel selection.
        self.seed = (int(torch.randint(0, 2 ** 62, (1,), generator=generator).item())
                     if self.max_pixels is not None else None)
        self.cache = bool(cache)
        self.dtype = dtype
        self.device = torch.device(device)
        self.chunk_pixels = check_positive_int('chunk_pixels', chunk_pixels)
        self.binary = binary
        self.allow_empty = bool(allow_empty)
        self.num_pixels: Optional[int] = None
        self.num_images: Optional[int] = None
        self.class_counts: Optional[Tensor] = None  # labelled pixels per class (per label value when binary)
        self.passes = 0
        self._cached: Optional[List[Tuple[Tensor, Tensor]]] = None

    def _batch_pixels(self, logits: Tensor, labels: Tensor, generator: Optional[torch.Generator],
                      index: int) -> Tuple[Tensor, Tensor, int]:
        name = f'logits of batch {index}'
        if self.binary:
            check_binary_logits(name, logits)
            if isinstance(labels, Tensor) and logits.shape == labels.shape:
                logits = logits.unsqueeze(1)  # (N, H, W) or (P,): one channel without its dimension
        check_logits(name, logits, self.num_classes)
        check_labels(f'labels of batch {index}', labels, 2 if self.binary else self.num_classes,
                     ignore_index=self.ignore_index, shape=_shape(logits)[:1] + _shape(logits)[2:])
        if logits.dim() == 2:  # (P, K): one "image"
            z3, y2 = logits.t().unsqueeze(0), labels.unsqueeze(0)
        else:
            z3 = logits.reshape(logits.shape[0], self.num_classes, -1)
            y2 = labels.reshape(labels.shape[0], -1)
        zs, ys = [], []
        for n in range(z3.shape[0]):
            z, y = select_pixels(z3[n], y2[n], ignore_index=self.ignore_index, max_pixels=self.max_pixels,
                                 generator=generator)
            zs.append(z)
            ys.append(y)
        return torch.cat(zs), torch.cat(ys), z3.shape[0]

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
            if pixels == 0 and not self.allow_empty:
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
