r"""Additive, fixed-size, float64 sufficient statistics for per-pixel calibration metrics.

For every evaluated pixel ``i`` (ignored pixels dropped) with probabilities ``p_i`` (``K`` classes), label
``y_i``, prediction ``ŷ_i = argmax_k p_{i,k}`` (first maximum), confidence ``c_i = p_{i,ŷ_i}`` and correctness
``a_i = 1[ŷ_i = y_i]``, :class:`CalibrationStatistics` holds, over the fine cells of a
:class:`~calibseg.functional.calibration.grid.CalibrationGrid`:

* top-label, per fine cell ``j``: ``count[j] = #{i: c_i in j}``, ``sum_conf[j] = Σ c_i``,
  ``sum_correct[j] = Σ a_i``;
* class-wise, per class ``k`` and fine cell ``j`` (over *all* pixels): ``cw_count[k, j] = #{i: p_{i,k} in j}``,
  ``cw_sum_prob[k, j] = Σ p_{i,k}``, ``cw_sum_label[k, j] = Σ 1[y_i = k]``;
* scalars: ``N``, ``Σ NLL_i``, ``Σ Brier_i``, ``Σ a_i``, ``Σ c_i``, ``Σ c_i^2``, ``Σ a_i c_i``, ``Σ a_i c_i^2``.

Everything lives in one flat float64 vector (:meth:`~CalibrationStatistics.to_tensor`), so statistics merge by
addition (``a + b``, ``all_reduce(SUM)``). Nothing per pixel is kept after :meth:`~CalibrationStatistics.update`.

Conventions: with logits, ``p = torch.softmax(logits)`` in the input dtype (float16/bfloat16 probabilities are
then widened to float32, exactly). ``NLL_i = -log p_{i,y_i}`` in float64 from the float32 ``p_y``; from
logits, where ``p_y < 1e-30`` (subnormal or 0 in float32) it is computed stably from the logits as
``x_ŷ - x_y - log c`` instead (the identity ``logsumexp(x) = x_ŷ - log p_ŷ``, with ``p_ŷ = c >= 1/K``); from
probabilities as ``-log max(p_y, 1.18e-38)`` (only an exact 0 or a float32 subnormal is clamped, capping a
pixel at 87.3 nats). ``Brier_i = Σ_k (p_{i,k} - 1[y_i = k])^2 = Σ_k p_{i,k}^2 - 2 p_{i,y_i} + 1`` with
``Σ_k p_{i,k}^2`` summed in float32 (relative error ~1e-7); every other per-pixel quantity is summed in
float64.

For one-channel heads, :class:`BinaryCalibrationStatistics` takes the foreground probability ``p`` (or its
logit), predicts foreground when ``p >= threshold``, and uses ``c = p`` for a foreground prediction and
``c = 1 - p`` (float32) otherwise (``max(p, 1 - p)`` at the default threshold 0.5); class-wise statistics use
``(1 - p, p)``; ``Brier_i = (p_i - y_i)^2`` (the binary Brier score, half the two-class sum) and
``NLL_i = -log max(p_{y_i}, prob_eps)`` with ``p_{y}`` in float64 and ``prob_eps = 1e-7`` by default (a
saturated float32 ``p == 1.0`` only says ``1 - p < 2^-24 ≈ 6e-8``), or ``softplus(∓z)`` from logits ``z``.
"""
from typing import Dict, Optional, Union

import torch
from torch import Tensor

from calibseg.utils.validation import check_in_range, check_int, check_positive_int

from .grid import DEFAULT_GRID, CalibrationGrid
from .inputs import (
    check_input_type,
    check_labels,
    check_prob_sums,
    check_values,
    iter_binary_chunks,
    iter_multiclass_blocks,
    valid_columns,
    values_ok,
)
from .parallel import ChunkRunner

__all__ = ['CalibrationStatistics', 'BinaryCalibrationStatistics', 'SCALARS']

#: names of the scalar statistics, in the order in which they open the flat state vector
SCALARS = ('num_pixels', 'sum_nll', 'sum_brier', 'sum_correct', 'sum_conf', 'sum_conf_sq', 'sum_correct_conf',
           'sum_correct_conf_sq')
_PROB_TINY = torch.finfo(torch.float32).tiny
_NLL_SWITCH = 1e-30  # below this p_y (float32), the NLL of logits is taken from the logits themselves


def _first_argmax(p: Tensor, conf: Tensor, workspace: Dict[str, Tensor]) -> Tensor:
    """``argmax`` over dim 0 of ``(K, P)`` probabilities, first maximum (3x faster than ``max(dim=0)`` on CPU)."""
    k = p.shape[0]
    if k > 255:
        return p.argmax(0)
    rev = workspace.get('rev')
    if rev is None or rev.shape[0] != k or rev.device != p.device:
        rev = torch.arange(k, 0, -1, dtype=torch.uint8, device=p.device).view(k, 1)
        workspace['rev'] = rev
    hit = (p == conf).view(torch.uint8)
    return (hit.mul_(rev).amax(0).long().neg_().add_(k))


def _cached_arange(workspace: Dict[str, Tensor], n: int, device: torch.device) -> Tensor:
    ar = workspace.get('arange')
    if ar is None or ar.numel() < n or ar.device != torch.device(device):
        ar = torch.arange(n, device=device)
        workspace['arange'] = ar
    return ar[:n]


class CalibrationStatistics:
    """Sufficient statistics of multi-class per-pixel calibration (see the module docstring).

    Args:
        num_classes: ``K``.
        input_type: ``'logits'`` (softmax applied here) or ``'probs'``; never guessed.
        ignore_index: label value of pixels to ignore (``None``: none).
        exclude_background: also drop pixels labelled 0, and leave class 0 out of class-wise averages.
        classwise: keep the ``(K, cells)`` class-wise statistics (for ``cwCE``); ``False`` accumulates only
            top-label statistics and scalars, about 3x faster.
        grid: the confidence grid (default: :data:`~calibseg.functional.calibration.grid.DEFAULT_GRID`).
        chunk_size: pixels processed at a time per worker (temporary memory ~``50 * K * chunk_size`` bytes per
            worker); on a GPU, larger chunks (e.g. ``2**20``) avoid per-chunk synchronisations.
        num_workers: CPU threads processing chunks in parallel, each with one intra-op thread (default:
            ``torch.get_num_threads()``; 1 runs serially in the calling thread). Ignored on GPU.
        device: device of the accumulated state (computation runs on the inputs' device).

    Example:
        >>> stats = CalibrationStatistics(3, input_type='logits')
        >>> _ = stats.update(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)))
        >>> stats.num_pixels
        32
    """

    binary = False

    def __init__(self, num_classes: int, *, input_type: str, ignore_index: Optional[int] = 255,
                 exclude_background: bool = False, classwise: bool = True,
                 grid: Optional[CalibrationGrid] = None, chunk_size: int = 32768,
                 num_workers: Optional[int] = None, device: Union[str, torch.device] = 'cpu') -> None:
        check_positive_int('num_classes', num_classes, minimum=2)
        check_int('ignore_index', ignore_index, allow_none=True)
        check_positive_int('chunk_size', chunk_size)
        if exclude_background and num_classes < 3 and not self.binary:
            raise ValueError('exclude_background needs num_classes >= 3 (class 0 is left out)')
        self.num_classes = num_classes
        self.input_type = check_input_type(input_type)
        self.ignore_index = ignore_index
        self.exclude_background = bool(exclude_background)
        self.classwise = bool(classwise)
        self.grid = DEFAULT_GRID if grid is None else grid
        if not isinstance(self.grid, CalibrationGrid):
            raise ValueError(f'grid must be a CalibrationGrid, got {type(grid).__name__}')
        self.chunk_size = chunk_size
        self.device = torch.device(device)
        self._state = torch.zeros(self.state_size, dtype=torch.float64, device=self.device)
        check_positive_int('num_workers', num_workers, allow_none=True)
        self.num_workers = num_workers

    @property
    def _top_alone_in_last_cell(self) -> bool:
        """True when only top-label probabilities can exceed ``1 - 1/G`` (softmax outputs sum to 1)."""
        return self.input_type == 'logits'

    # ---------------------------------------------------------------- layout
    @property
    def state_size(self) -> int:
        """Length of the flat state vector."""
        n = self.grid.n_cells
        return len(SCALARS) + 3 * n + (3 * self.num_classes * n if self.classwise else 0)

    def _field(self, i: int) -> Tensor:
        n, s = self.grid.n_cells, len(SCALARS)
        return self._state[s + i * n:s + (i + 1) * n]

    def _cw(self, i: int) -> Tensor:
        if not self.classwise:
            raise ValueError('class-wise statistics were not accumulated (classwise=False)')
        n, k = self.grid.n_cells, self.num_classes
        start = len(SCALARS) + 3 * n + i * k * n
        return self._state[start:start + k * n].view(k, n)

    count = property(lambda self: self._field(0), doc='``(cells,)`` top-label pixel count per fine cell.')
    sum_conf = property(lambda self: self._field(1), doc='``(cells,)`` sum of confidences per fine cell.')
    sum_correct = property(lambda self: self._field(2), doc='``(cells,)`` number of correct pixels per cell.')
    cw_count = property(lambda self: self._cw(0), doc='``(K, cells)`` count of ``p_k`` per fine cell.')
    cw_sum_prob = property(lambda self: self._cw(1), doc='``(K, cells)`` sum of ``p_k`` per fine cell.')
    cw_sum_label = property(lambda self: self._cw(2), doc='``(K, cells)`` sum of ``1[y = k]`` per fine cell.')

    @property
    def scalars(self) -> Dict[str, float]:
        """The scalar statistics as python floats (see :data:`SCALARS`)."""
        return dict(zip(SCALARS, self._state[:len(SCALARS)].tolist()))

    @property
    def num_pixels(self) -> int:
        """Number of evaluated pixels ``N``."""
        return int(self._state[0])

    def _config(self) -> dict:
        return dict(num_classes=self.num_classes, binary=self.binary, classwise=self.classwise,
                    exclude_background=self.exclude_background, grid=self.grid.state())

    # ---------------------------------------------------------------- update
    def update(self, inputs: Tensor, labels: Tensor, *, name: Optional[str] = None) -> 'CalibrationStatistics':
        """Accumulate a batch of pixels.

        Args:
            inputs: ``(N, K)``, ``(K, H, W)`` or ``(N, K, *spatial)`` logits or probabilities
                (float16, bfloat16, float32 or float64).
            labels: ``(N,)``, ``(H, W)`` or ``(N, *spatial)`` integer labels in ``[0, K)`` or ``ignore_index``.
            name: optional sample name that prefixes error messages.

        Returns:
            ``self``.

        Raises:
            ValueError: on a shape mismatch, NaN/inf inputs, probabilities outside ``[0, 1]`` or whose classes
                do not sum to 1 (within ``inputs.PROB_SUM_ATOL``), or labels outside ``[0, K)``; the state is
                then unchanged.
        """
        with torch.no_grad():
            blocks = iter_multiclass_blocks(inputs, labels, self.num_classes, self.chunk_size, name)
            checked = values_ok(inputs, self.input_type)
            with ChunkRunner(self._workers(), inputs.device) as runner:
                for x_block, y_block in blocks:
                    for start in range(0, y_block.shape[0], self.chunk_size):
                        stop = start + self.chunk_size
                        runner.submit(self._chunk_multiclass, x_block[:, start:stop], y_block[start:stop],
                                      checked, name)
                        runner.throttle()
                acc = runner.total()
        self._commit(acc)
        return self

    def _workers(self) -> int:
        return torch.get_num_threads() if self.num_workers is None else self.num_workers

    def _chunk_multiclass(self, x: Tensor, y: Tensor, checked: bool, name: Optional[str],
                          acc: Optional[Tensor], workspace: dict) -> Optional[Tensor]:
        keep = valid_columns(y, self.ignore_index, self.exclude_background)
        if keep is not None:
            if keep.numel() == 0:
                return acc
            x, y = x.index_select(1, keep), y.index_select(0, keep)
        p = torch.softmax(x, dim=0) if self.input_type == 'logits' else x
        if p.dtype in (torch.float16, torch.bfloat16):
            p = p.float()
        check_labels(y, self.num_classes, self.ignore_index, name)
        if not checked:
            check_values(x, self.input_type, name)
        if self.input_type == 'probs':
            check_prob_sums(x, name)
        return self._accumulate_multiclass(x, p, y, acc, workspace)

    def _commit(self, acc: Optional[Tensor]) -> None:
        if acc is not None:
            self._state += acc.to(self._state.device)

    def _accumulate_multiclass(self, x: Tensor, p: Tensor, y: Tensor, acc: Optional[Tensor],
                               workspace: Dict[str, Tensor]) -> Tensor:
        """One chunk of ``(K, P)`` logits/probabilities ``x``, probabilities ``p`` (float32/64) and labels."""
        conf = p.amax(0)
        pred = _first_argmax(p, conf, workspace)
        p_y = p.gather(0, y.unsqueeze(0)).squeeze(0)
        p_y64 = p_y.double()
        if self.input_type == 'logits':
            nll = torch.log(p_y64).neg_()
            # -log p_y loses precision once p_y is subnormal (or 0): there use the logits,
            # -log p_y = logsumexp(x) - x_y = x_ŷ - x_y - log c
            tiny = p_y < _NLL_SWITCH
            if bool(tiny.any()):
                sel = tiny.nonzero().squeeze(1)
                xs = x.index_select(1, sel).double()
                nll[sel] = (xs.gather(0, pred[sel].unsqueeze(0)) - xs.gather(0, y[sel].unsqueeze(0))).squeeze(0) \
                    - torch.log(conf[sel].double())
        else:
            nll = torch.log(p_y64.clamp_min(_PROB_TINY)).neg_()
        brier = (p * p).sum(0).double().sub_(p_y64, alpha=2.0).add_(1.0)
        return self._accumulate(p, conf, pred, y, nll, brier, acc, workspace)

    def _accumulate(self, p: Tensor, conf: Tensor, pred: Tensor, y: Tensor, nll: Tensor, brier: Tensor,
                    acc: Optional[Tensor], workspace: Dict[str, Tensor]) -> Tensor:
        """Add one chunk: ``p`` ``(K, P)`` float32/64, ``conf`` ``(P,)``, ``pred``/``y`` ``(P,)`` int64."""
        grid = self.grid
        n, k = grid.n_cells, self.num_classes
        n_pix = p.shape[1]
        s = len(SCALARS)
        if acc is None:
            acc = torch.zeros(self.state_size, dtype=torch.float64, device=p.device)
        correct = pred == y
        conf64 = conf.double()
        if self.classwise:
            fine, p64 = grid.index_and_double(p, last_cell=not self._top_alone_in_last_cell, workspace=workspace)
            ar = _cached_arange(workspace, n_pix, p.device)
            flat_top, flat_y = pred * n_pix + ar, y * n_pix + ar
            flat = fine.view(-1)
            fine_top = flat.index_select(0, flat_top)
            if self._top_alone_in_last_cell:
                # the last base cell was not refined: only top-label probabilities can be there
                first_high = grid.n_low + grid.base_cells - 2
                hi = fine_top == first_high
                if bool(hi.any()):
                    sel = hi.nonzero().squeeze(1)
                    fix = grid.index_and_double(conf.index_select(0, sel))[0]
                    fine_top.index_copy_(0, sel, fix)
                    flat.index_copy_(0, flat_top.index_select(0, sel), fix)
            fine_lab = flat.index_select(0, flat_y)
        else:
            fine_top = grid.index_and_double(conf)[0]
        # scalars
        acc[0] += n_pix
        conf_ok = conf64 * correct  # the correct pixels' confidences (KDE-ECE's bandwidth)
        acc[1:s] += torch.stack([nll.sum(), brier.sum(), correct.sum().double(), conf64.sum(),
                                 conf64.square().sum(), conf_ok.sum(), conf_ok.square().sum()])
        # top-label: one bincount over (cell, correct)
        top = torch.bincount(torch.add(fine_top, correct, alpha=n), minlength=2 * n)
        acc[s:s + n] += top[:n] + top[n:]
        acc[s + n:s + 2 * n] += torch.bincount(fine_top, weights=conf64, minlength=n)
        acc[s + 2 * n:s + 3 * n] += top[n:]
        if self.classwise:
            base = s + 3 * n
            offset = workspace.get('offset')
            if offset is None or offset.dtype != fine.dtype or offset.device != fine.device:
                offset = torch.arange(0, k * n, n, dtype=fine.dtype, device=fine.device).view(k, 1)
                workspace['offset'] = offset
            idx = fine.add_(offset).view(-1)
            acc[base:base + k * n] += torch.bincount(idx, minlength=k * n)
            acc[base + k * n:base + 2 * k * n] += torch.bincount(idx, weights=p64.view(-1), minlength=k * n)
            acc[base + 2 * k * n:base + 3 * k * n] += torch.bincount(torch.add(fine_lab, y, alpha=n),
                                                                     minlength=k * n)
        return acc

    # ---------------------------------------------------------------- algebra and (de)serialisation
    def _check_compatible(self, other: 'CalibrationStatistics') -> None:
        if not isinstance(other, CalibrationStatistics):
            raise ValueError(f'can only merge CalibrationStatistics, got {type(other).__name__}')
        if self._config() != other._config():
            raise ValueError(f'cannot merge statistics with different configurations: {self._config()} vs '
                             f'{other._config()}')

    def merge(self, other: 'CalibrationStatistics') -> 'CalibrationStatistics':
        """Add ``other``'s statistics into ``self`` (in place) and return ``self``."""
        self._check_compatible(other)
        self._state += other._state.to(self._state.device)
        return self

    def __add__(self, other: 'CalibrationStatistics') -> 'CalibrationStatistics':
        return self.copy().merge(other)

    def __iadd__(self, other: 'CalibrationStatistics') -> 'CalibrationStatistics':
        return self.merge(other)

    def copy(self) -> 'CalibrationStatistics':
        """A deep copy."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._state = self._state.clone()
        return new

    def reset(self) -> 'CalibrationStatistics':
        """Zero the state."""
        self._state.zero_()
        return self

    def to_tensor(self, device: Optional[torch.device] = None) -> Tensor:
        """A copy of the flat float64 state vector (sum it across processes with ``all_reduce``)."""
        return self._state.clone() if device is None else self._state.to(device, copy=True)

    def from_tensor(self, tensor: Tensor) -> 'CalibrationStatistics':
        """New statistics with ``self``'s configuration and the state ``tensor`` (from :meth:`to_tensor`)."""
        if not isinstance(tensor, Tensor) or tensor.shape != (self.state_size,):
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f'state tensor must have shape ({self.state_size},), got {shape}')
        new = self.copy()
        new._state = tensor.detach().to(self.device, torch.float64).clone()
        return new

    def state_dict(self) -> dict:
        """Configuration and state (``'state'`` is the flat vector) for checkpoints and pickling."""
        return dict(config=self._config(), state=self._state.clone())

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a :meth:`state_dict` taken from statistics with the same configuration."""
        if state_dict.get('config') != self._config():
            raise ValueError(f"state_dict configuration {state_dict.get('config')} does not match "
                             f'{self._config()}')
        self._state = self.from_tensor(state_dict['state'])._state

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, input_type={self.input_type!r}, '
                f'num_pixels={self.num_pixels}, classwise={self.classwise}, '
                f'exclude_background={self.exclude_background})')


class BinaryCalibrationStatistics(CalibrationStatistics):
    """Calibration statistics of one-channel (foreground probability) maps, e.g. saliency heads.

    Args:
        input_type: ``'probs'`` (foreground probability, what mmseg stores for one-channel heads) or
            ``'logits'`` (sigmoid applied here in the input dtype).
        threshold: foreground is predicted where ``p >= threshold``.
        ignore_index: label value of pixels to ignore; other labels must be 0 or 1.
        exclude_background: also drop pixels labelled 0 and leave the background out of ``cwCE``.
        classwise: keep the two-class (background, foreground) statistics.
        prob_eps: clamp of ``p_y`` in the NLL of probability inputs.
        grid, chunk_size, num_workers, device: as for :class:`CalibrationStatistics`.
    """

    binary = True

    def __init__(self, *, input_type: str, threshold: float = 0.5, ignore_index: Optional[int] = 255,
                 exclude_background: bool = False, classwise: bool = True, prob_eps: float = 1e-7,
                 grid: Optional[CalibrationGrid] = None, chunk_size: int = 2**18,
                 num_workers: Optional[int] = None, device: Union[str, torch.device] = 'cpu') -> None:
        check_in_range('threshold', threshold, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_in_range('prob_eps', prob_eps, 0.0, 0.5, low_inclusive=False, high_inclusive=False)
        super().__init__(2, input_type=input_type, ignore_index=ignore_index,
                         exclude_background=exclude_background, classwise=classwise, grid=grid,
                         chunk_size=chunk_size, num_workers=num_workers, device=device)
        self.threshold = float(threshold)
        self.prob_eps = float(prob_eps)

    def update(self, inputs: Tensor, labels: Tensor, *, name: Optional[str] = None) -> 'CalibrationStatistics':
        """Accumulate a batch of one-channel maps.

        Args:
            inputs: foreground probabilities (or logits) of the shape of ``labels``, or with a channel
                dimension of size 1: ``(N, 1, H, W)`` with ``(N, H, W)``, ``(1, H, W)`` with ``(H, W)``,
                ``(N,)`` with ``(N,)``...
            labels: integer labels in ``{0, 1}`` or ``ignore_index``.
            name: optional sample name that prefixes error messages.

        Returns:
            ``self``.
        """
        with torch.no_grad():
            chunks = iter_binary_chunks(inputs, labels, self.chunk_size, name)
            checked = values_ok(inputs, self.input_type)
            with ChunkRunner(self._workers(), inputs.device) as runner:
                for x, y in chunks:
                    runner.submit(self._chunk_binary, x, y, checked, name)
                    runner.throttle()
                acc = runner.total()
        self._commit(acc)
        return self

    def _chunk_binary(self, x: Tensor, y: Tensor, checked: bool, name: Optional[str], acc: Optional[Tensor],
                      workspace: dict) -> Optional[Tensor]:
        keep = valid_columns(y, self.ignore_index, self.exclude_background)
        if keep is not None:
            if keep.numel() == 0:
                return acc
            x, y = x.index_select(0, keep), y.index_select(0, keep)
        check_labels(y, 2, self.ignore_index, name)
        if not checked:
            check_values(x, self.input_type, name)
        return self._accumulate_binary(x, y, acc, workspace)

    def _accumulate_binary(self, x: Tensor, y: Tensor, acc: Optional[Tensor],
                           workspace: Dict[str, Tensor]) -> Tensor:
        p = torch.sigmoid(x) if self.input_type == 'logits' else x
        p32 = p.float()
        fg = p32 >= self.threshold
        one_minus = 1.0 - p32
        conf = torch.where(fg, p32, one_minus)
        pred = fg.long()
        yd = y.double()
        if self.input_type == 'logits':
            # -log sigmoid(z) = softplus(-z) for y = 1, -log(1 - sigmoid(z)) = softplus(z) for y = 0
            nll = torch.nn.functional.softplus(x.double() * (1.0 - 2.0 * yd))
        else:
            p64 = p32.double()
            p_y = torch.where(y == 1, p64, 1.0 - p64)
            nll = -torch.log(p_y.clamp_min(self.prob_eps))
        brier = (p32.double() - yd).square_()
        probs = torch.stack([one_minus, p32])
        return self._accumulate(probs, conf, pred, y, nll, brier, acc, workspace)

    @property
    def _top_alone_in_last_cell(self) -> bool:
        return self.threshold == 0.5  # the other class then has 1 - c <= 1/2

    def _config(self) -> dict:
        cfg = super()._config()
        cfg['threshold'] = self.threshold
        return cfg

