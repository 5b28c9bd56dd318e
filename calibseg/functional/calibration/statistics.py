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
``max_k x_k - x_y - log c`` instead (the identity ``logsumexp(x) = x_ŷ - log p_ŷ``, with ``p_ŷ = c >= 1/K``); from
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

from .grid import DEFAULT_GRID, CalibrationGrid, _buffer
from .inputs import (
    PROBLEM_FIELDS,
    check_input_type,
    check_labels,
    check_prob_sums,
    check_values,
    describe_problems,
    flag_problems,
    iter_binary_chunks,
    iter_multiclass_blocks,
    merge_problems,
    new_problems,
    prob_sum_tolerance,
    valid_columns,
)
from .parallel import ChunkRunner

__all__ = ['CalibrationStatistics', 'BinaryCalibrationStatistics', 'SCALARS']

#: names of the scalar statistics, in the order in which they open the flat state vector
SCALARS = ('num_pixels', 'sum_nll', 'sum_brier', 'sum_correct', 'sum_conf', 'sum_conf_sq', 'sum_correct_conf',
           'sum_correct_conf_sq')
_PROB_TINY = torch.finfo(torch.float32).tiny
_NLL_SWITCH = 1e-30  # below this p_y (float32), the NLL of logits is taken from the logits themselves
_FORCE_DEVICE_PATH = False  # tests: the accelerators' histograms (index_add_, not bincount) on CPU tensors
_CLASS_PASS = 16384  # pixels per pass over the class dimension: (K, _CLASS_PASS) scratch stays in cache, and
# each pass is long enough for its ~20 operations to cost little Python (measured: 0.71x -> 0.89x the softmax floor
# for the top-label keys at 2 threads against 8192)


def _first_argmax(p: Tensor, conf: Tensor, workspace: Dict[str, Tensor], out: Optional[Tensor] = None) -> Tensor:
    """``argmax`` over dim 0 of ``(K, P)`` float32/float64 probabilities, first maximum: int64, or the class
    numbers as floats written into ``out`` (a floating ``(P,)`` tensor, any strides).

    ``max over k of (K - k) [p_k == c]`` read back as ``K - that``, in float arithmetic (on CPU ~10x faster than
    ``argmax(dim=0)`` and 2.5x faster than the same with a boolean mask); a column without a maximum (NaN) gets
    class ``K - 1``, so the result is always a valid index.
    """
    k = p.shape[0]
    rev = workspace.get('rev')
    if rev is None or rev.shape[0] != k or rev.dtype != p.dtype or rev.device != p.device:
        rev = torch.arange(k, 0, -1, dtype=p.dtype, device=p.device).view(k, 1)
        workspace['rev'] = rev
    hit = torch.sub(p, conf, out=_buffer(workspace, 'hit', p.shape, p.dtype, p.device))
    hit.eq_(0.0).mul_(rev)  # p - c == 0 exactly iff p == c (finite values)
    first = hit.amax(0) if out is None else torch.amax(hit, 0, out=out)
    first.clamp_min_(1.0).neg_().add_(k)
    return first.long() if out is None else first


def _histogram(index: Tensor, size: int, weights: Optional[Tensor] = None) -> Tensor:
    """``bincount(index, weights, minlength=size)`` for indices in ``[0, size)``, without host synchronisation.

    On CPU ``torch.bincount`` (the fastest there); elsewhere ``index_add_`` into zeros, because CUDA's
    ``bincount`` reads the largest index back to the host to size its output.
    """
    if index.device.type == 'cpu' and not _FORCE_DEVICE_PATH:
        return torch.bincount(index, weights, minlength=size)
    out = torch.zeros(size, dtype=torch.float64, device=index.device)
    if weights is None:
        weights = torch.ones((), dtype=torch.float64, device=index.device).expand(index.shape[0])
    return out.index_add_(0, index, weights)


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
            top-label statistics and scalars, about 2x faster.
        grid: the confidence grid (default: :data:`~calibseg.functional.calibration.grid.DEFAULT_GRID`).
        chunk_size: pixels per task of a worker (temporary memory ~``50 * K * chunk_size`` bytes per worker,
            kept between calls until :func:`~calibseg.functional.calibration.parallel.release_buffers`); the passes
            over the class dimension take 16384 pixels at a time. On a GPU, larger chunks (e.g. ``2**20``) launch
            fewer kernels (nothing is read back either way).
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
                 grid: Optional[CalibrationGrid] = None, chunk_size: int = 131072,
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
        self._problems = new_problems(self.device)
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
    def update(self, inputs: Tensor, labels: Tensor, *, name: Optional[str] = None,
               defer_checks: bool = False) -> 'CalibrationStatistics':
        """Accumulate a batch of pixels.

        The accumulation reads nothing back to the host (no synchronisation with an accelerator): value
        problems are counted on the device (see :mod:`.inputs`) and the offending pixels left out. By default
        the counts are read once at the end and a problem raises the readable ``ValueError`` below (the state is
        then unchanged); with ``defer_checks=True`` nothing is read back and the problems are kept, to be raised
        by :meth:`check_problems` (which :func:`~calibseg.functional.calibration.calibration_metrics` calls).

        Args:
            inputs: ``(N, K)``, ``(K, H, W)`` or ``(N, K, *spatial)`` logits or probabilities
                (float16, bfloat16, float32 or float64).
            labels: ``(N,)``, ``(H, W)`` or ``(N, *spatial)`` integer labels in ``[0, K)`` or ``ignore_index``.
            name: optional sample name that prefixes error messages.
            defer_checks: keep value problems for :meth:`check_problems` instead of raising now.

        Returns:
            ``self``.

        Raises:
            ValueError: on a shape mismatch (always at once); without ``defer_checks``, also on NaN/inf inputs,
                probabilities outside ``[0, 1]`` or whose classes do not sum to 1 (within
                ``inputs.PROB_SUM_ATOL``), or labels outside ``[0, K)``; the state is then unchanged.
        """
        with torch.no_grad():
            blocks = iter_multiclass_blocks(inputs, labels, self.num_classes, self.chunk_size, name)
            step = self.chunk_size
            chunks = ((x[:, start:start + step], y[start:start + step])
                      for x, y in blocks for start in range(0, y.shape[0], step))
            self._run(chunks, self._chunk_multiclass, inputs, labels, name, defer_checks)
        return self

    def _workers(self) -> int:
        return torch.get_num_threads() if self.num_workers is None else self.num_workers

    def _init_acc(self, acc: Tensor) -> None:
        acc[:self.state_size].zero_()
        new_problems(acc.device, out=acc[self.state_size:])

    def _merge_acc(self, into: Tensor, other: Tensor) -> None:
        into[:self.state_size] += other[:self.state_size]
        merge_problems(into[self.state_size:], other[self.state_size:])

    def _run(self, chunks, fn, inputs: Tensor, labels: Tensor, name: Optional[str], defer_checks: bool) -> None:
        """Accumulate ``chunks`` with ``fn`` into per-worker accumulators ``[state | problems]``, then commit.

        With ``defer_checks`` (nothing to undo on an error) and the state on the inputs' device, one worker adds
        straight into the state (no accumulator to clear and commit: a small image costs little more than its
        pixels); a single chunk runs in the calling thread.
        """
        chunks = list(chunks)
        if not chunks:
            return
        size = self.state_size
        direct = defer_checks and inputs.device == self._state.device
        target = self._state_and_problems() if direct else None
        with ChunkRunner(min(self._workers(), len(chunks)), inputs.device, size + len(PROBLEM_FIELDS),
                         self._init_acc, self._merge_acc, first_acc=target) as runner:
            for x, y in chunks:
                runner.submit(fn, x, y)
                runner.throttle()
            acc = runner.total()
            if acc is None or direct:
                return
            problems = acc[size:]
            if defer_checks:
                merge_problems(self._problems, problems.to(self._problems.device))
            else:
                self._raise_problems(problems.tolist(), inputs, labels, name)  # the one readback
            self._state += acc[:size].to(self._state.device)

    def _state_and_problems(self) -> Tensor:
        """One flat buffer ``[state | problems]`` whose halves are ``_state`` and ``_problems`` (made so if they
        are not adjacent views of one buffer already)."""
        size = self.state_size
        both = getattr(self, '_both', None)
        if (both is None or both.device != self._state.device or self._state.data_ptr() != both.data_ptr()
                or self._problems.data_ptr() != both[size:].data_ptr()):
            both = torch.cat([self._state, self._problems.to(self._state.device)])
            self._both, self._state, self._problems = both, both[:size], both[size:]
        return both

    def _keep(self, y: Tensor) -> Tensor:
        """``(P,)`` bool: pixels not ignored (label not ``ignore_index``, not 0 with ``exclude_background``)."""
        keep = y != self.ignore_index if self.ignore_index is not None else torch.ones_like(y, dtype=torch.bool)
        if self.exclude_background:
            keep &= y != 0
        return keep

    def _chunk_multiclass(self, x: Tensor, y: Tensor, acc: Tensor, workspace: dict) -> None:
        """Add one chunk of ``(K, L)`` inputs and ``(L,)`` labels into ``acc``.

        Ignored pixels are masked, not removed (the shapes, and so the work, never depend on the values). The
        passes over the class dimension run on ``(K, 16384)`` slices (scratch that stays in cache) and leave one value
        per pixel (confidence, prediction, ``p_y``, ``Σ_k p_k^2``, ...) in chunk-wide buffers; everything per pixel
        then runs once on the whole chunk.
        """
        k, n_pix = self.num_classes, y.shape[0]
        dev = x.device
        logits = self.input_type == 'logits'
        pdtype = torch.float64 if x.dtype == torch.float64 else torch.float32

        def buf(key: str, shape, dtype=pdtype) -> Tensor:
            return _buffer(workspace, key, shape, dtype, dev)

        clamped = y.clamp(0, k - 1)  # any index is safe; pixels left out do not count
        conf, p_y, sumsq = buf('c_conf', (n_pix,)), buf('c_py', (n_pix,)), buf('c_sumsq', (n_pix,))
        top = buf('c_top', (n_pix,))  # predicted classes as floats
        low = buf('c_low', (n_pix,), x.dtype)
        x_max = x_y = None
        if logits:  # the logits' largest value and the label's, for the NLL of a vanishing p_y
            x_max, x_y = buf('c_xmax', (n_pix,), x.dtype), buf('c_xy', (n_pix,), x.dtype)
        high = None if logits else buf('c_high', (n_pix,), x.dtype)
        sums = None if logits else buf('c_sums', (n_pix,), torch.float64)
        fine = p64 = None
        if self.classwise:
            fine = buf('c_fine', (k, n_pix), torch.int32)
            p64 = buf('c_p64', (k, n_pix), torch.float64)
        for start in range(0, n_pix, _CLASS_PASS):
            stop = min(start + _CLASS_PASS, n_pix)
            span = stop - start
            xc = _buffer(workspace, 'x', (k, span), x.dtype, dev).copy_(x[:, start:stop])  # contiguous
            torch.amin(xc, 0, out=low[start:stop])
            at_label = torch.add(_cached_arange(workspace, span, dev), clamped[start:stop], alpha=span)  # (y_i, i)
            if logits:
                torch.amax(xc, 0, out=x_max[start:stop])
                torch.index_select(xc.view(-1), 0, at_label, out=x_y[start:stop])
                p = torch.softmax(xc, 0, out=_buffer(workspace, 'p', (k, span), x.dtype, dev))
            else:
                p = xc
                torch.amax(xc, 0, out=high[start:stop])
                torch.sum(xc, 0, dtype=torch.float64, out=sums[start:stop])
            if p.dtype in (torch.float16, torch.bfloat16):
                p = _buffer(workspace, 'p32', (k, span), torch.float32, dev).copy_(p)
            c = torch.amax(p, 0, out=conf[start:stop])
            _first_argmax(p, c, workspace, out=top[start:stop])
            torch.index_select(p.view(-1), 0, at_label, out=p_y[start:stop])
            square = torch.mul(p, p, out=_buffer(workspace, 'hit', p.shape, p.dtype, dev))
            torch.sum(square, 0, out=sumsq[start:stop])
            if fine is not None:
                if self._top_alone_in_last_cell:  # non-top probabilities are <= 1/2: a table lookup
                    self.grid.index_below_last_cell(p, workspace=workspace, tag='cw_', out=fine[:, start:stop])
                else:
                    cells = self.grid.index_and_double(p, workspace=workspace, tag='cw_')[0]
                    fine[:, start:stop].copy_(cells.clamp_(0, self.grid.n_cells - 1))
                p64[:, start:stop].copy_(p)
        if logits:  # a NaN or +inf logit makes its pixel's softmax NaN; -inf shows in the minimum
            finite = torch.isfinite(low).logical_and_(~torch.isnan(conf))
            drop = flag_problems(acc[self.state_size:], keep=self._keep(y), labels=y, clamped=clamped,
                                 finite=finite)
        else:
            finite = torch.isfinite(low).logical_and_(torch.isfinite(high))
            drop = flag_problems(acc[self.state_size:], keep=self._keep(y), labels=y, clamped=clamped,
                                 finite=finite, low=low, high=high, sums=sums,
                                 sum_tolerance=prob_sum_tolerance(x.dtype))
        pred = top.long()
        p_y64 = p_y.double()
        if logits:
            # -log p_y loses precision once p_y is subnormal (or 0): there use the logits,
            # -log p_y = logsumexp(x) - x_y = -log c + (max_k x_k - x_y) (c is the softmax at the largest logit,
            # softmax being monotone); one log for both cases
            tiny = p_y < _NLL_SWITCH
            gap = x_max.double().sub_(x_y.double()).masked_fill_(~tiny, 0.0)
            nll = torch.log(torch.where(tiny, conf.double(), p_y64)).neg_().add_(gap)
        else:
            nll = torch.log(p_y64.clamp_min(_PROB_TINY)).neg_()
        brier = sumsq.double().sub_(p_y64, alpha=2.0).add_(1.0)
        self._accumulate(conf, pred, clamped, drop, nll, brier, acc, workspace, fine=fine, p64=p64)

    def _raise_problems(self, values: list, inputs: Tensor, labels: Tensor, name: Optional[str]) -> None:
        """Raise the readable error of the first problem found in the inputs when ``values`` (the problem vector)
        counts any."""
        counts = dict(zip(PROBLEM_FIELDS, values))
        if not any(counts[f] for f in ('nonfinite', 'range', 'labels', 'sums')):
            return
        self._readable_checks(inputs, labels, name)
        problems = describe_problems(values, num_classes=self.num_classes, ignore_index=self.ignore_index,
                                     input_type=self.input_type, sum_tolerance=prob_sum_tolerance(inputs.dtype))
        raise ValueError((f'{name}: ' if name else '') + '; '.join(problems))

    def _readable_checks(self, inputs: Tensor, labels: Tensor, name: Optional[str]) -> None:
        """The synchronising checks that list the offending values (run only once a problem was counted)."""
        for x, y in iter_multiclass_blocks(inputs, labels, self.num_classes, self.chunk_size, name):
            keep = valid_columns(y, self.ignore_index, self.exclude_background)
            if keep is not None:
                x, y = x.index_select(1, keep), y.index_select(0, keep)
            if y.numel() == 0:
                continue
            check_labels(y, self.num_classes, self.ignore_index, name)
            check_values(x, self.input_type, name)
            if self.input_type == 'probs':
                check_prob_sums(x, name)

    @property
    def problems(self) -> Dict[str, float]:
        """The value problems kept by ``update(..., defer_checks=True)`` (:data:`.inputs.PROBLEM_FIELDS`)."""
        return dict(zip(PROBLEM_FIELDS, self._problems.tolist()))

    def check_problems(self, name: Optional[str] = None) -> None:
        """Raise a ``ValueError`` naming the value problems kept by deferred updates, if any (one readback)."""
        values = self._problems.tolist()
        problems = describe_problems(values, num_classes=self.num_classes, ignore_index=self.ignore_index,
                                     input_type=self.input_type)
        if problems:
            raise ValueError((f'{name}: ' if name else '') + '; '.join(problems)
                             + ' (these pixels were left out; update() without defer_checks lists the values)')

    def _accumulate(self, conf: Tensor, pred: Tensor, y: Tensor, drop: Tensor, nll: Tensor, brier: Tensor,
                    acc: Tensor, workspace: Dict[str, Tensor], *, p: Optional[Tensor] = None,
                    fine: Optional[Tensor] = None, p64: Optional[Tensor] = None) -> None:
        """Add one chunk into ``acc``: ``conf`` ``(P,)``, ``pred``/``y`` ``(P,)`` int64 (valid indices
        everywhere), ``drop`` ``(P,)`` bool (pixels left out), ``nll``/``brier`` float64; for class-wise
        statistics either the probabilities ``p`` ``(K, P)`` or their cells ``fine`` (int32, cells of the
        top-label entries free, see :meth:`CalibrationGrid.index_below_last_cell`) and float64 copy ``p64``."""
        grid = self.grid
        n, k = grid.n_cells, self.num_classes
        n_pix = conf.shape[0]
        s = len(SCALARS)
        dev = conf.device
        correct = pred == y
        fine_top, conf64 = grid.index_and_double(conf, workspace=workspace, tag='top_')
        fine_top.clamp_(0, n - 1)  # a valid index in the columns left out too
        # scalars: one (7, P) float64 block
        rows = _buffer(workspace, 'scalars', (7, n_pix), torch.float64, dev)
        rows[0].copy_(nll)
        rows[1].copy_(brier)
        rows[2].copy_(correct)
        rows[3].copy_(conf64)
        torch.mul(rows[3], rows[3], out=rows[4])
        torch.mul(rows[3], rows[2], out=rows[5])  # the correct pixels' confidences (KDE-ECE's bandwidth)
        torch.mul(rows[5], rows[5], out=rows[6])
        keep = (~drop).double()
        # the left-out pixels may hold NaN or inf (garbage under ignored labels): zero them, then weight by keep
        # (evaluated pixels are finite: a NaN there would be a dropped problem pixel)
        acc[0:1] += keep.sum()
        acc[1:s] += torch.mv(rows.nan_to_num_(0.0, 0.0, 0.0), keep)
        # top-label: one histogram over (cell, correct), one of the confidences; left-out pixels in a last bin
        top = torch.add(fine_top, correct, alpha=n).masked_fill_(drop, 2 * n)
        both = _histogram(top, 2 * n + 1)
        acc[s:s + n] += both[:n] + both[n:2 * n]
        acc[s + 2 * n:s + 3 * n] += both[n:2 * n]
        acc[s + n:s + 2 * n] += _histogram(fine_top.masked_fill(drop, n), n + 1, conf64)[:n]
        if not self.classwise:
            return
        if fine is None:
            if self._top_alone_in_last_cell:
                fine = grid.index_below_last_cell(p, workspace=workspace, tag='cw_')
                p64 = p if p.dtype == torch.float64 else _buffer(workspace, 'p64', p.shape, torch.float64,
                                                                    dev).copy_(p)
            else:
                fine, p64 = grid.index_and_double(p, workspace=workspace, tag='cw_')
                fine.clamp_(0, n - 1)  # any value in the columns left out must still index the histogram
        ar = _cached_arange(workspace, n_pix, dev)
        flat = fine.view(-1)
        # the top-label entries take the confidence's cell (exact in the last base cell, which the class-wise
        # pass skips when only top-label probabilities can be there)
        flat.index_copy_(0, torch.add(ar, pred, alpha=n_pix), fine_top)
        offset = workspace.get('offset')
        if offset is None or offset.shape[0] != k or offset.dtype != fine.dtype or offset.device != dev:
            offset = torch.arange(0, k * n, n, dtype=fine.dtype, device=dev).view(k, 1)
            workspace['offset'] = offset
        kn = k * n
        # cell + k * n, and the columns left out pushed past k * n then clamped onto the last bin
        fine.add_(offset).add_(drop.to(fine.dtype).mul_(kn).view(1, n_pix)).clamp_max_(kn)
        base = s + 3 * n
        acc[base:base + kn] += _histogram(flat, kn + 1)[:kn]
        acc[base + kn:base + 2 * kn] += _histogram(flat, kn + 1, p64.reshape(-1))[:kn]
        lab = flat.index_select(0, torch.add(ar, y, alpha=n_pix))  # cell + y * n of p_y
        acc[base + 2 * kn:base + 3 * kn] += _histogram(lab, kn + 1)[:kn]

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
        merge_problems(self._problems, other._problems.to(self._problems.device))
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
        new._problems = self._problems.clone()
        new._both = None
        return new

    def reset(self) -> 'CalibrationStatistics':
        """Zero the state (and forget deferred problems)."""
        self._state.zero_()
        new_problems(self._problems.device, out=self._problems)
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
        new._problems = new_problems(self.device)
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

    def update(self, inputs: Tensor, labels: Tensor, *, name: Optional[str] = None,
               defer_checks: bool = False) -> 'CalibrationStatistics':
        """Accumulate a batch of one-channel maps (checks as for :meth:`CalibrationStatistics.update`).

        Args:
            inputs: foreground probabilities (or logits) of the shape of ``labels``, or with a channel
                dimension of size 1: ``(N, 1, H, W)`` with ``(N, H, W)``, ``(1, H, W)`` with ``(H, W)``,
                ``(N,)`` with ``(N,)``...
            labels: integer labels in ``{0, 1}`` or ``ignore_index``.
            name: optional sample name that prefixes error messages.
            defer_checks: keep value problems for :meth:`check_problems` instead of raising now.

        Returns:
            ``self``.
        """
        with torch.no_grad():
            chunks = iter_binary_chunks(inputs, labels, self.chunk_size, name)
            self._run(chunks, self._chunk_binary, inputs, labels, name, defer_checks)
        return self

    def _readable_checks(self, inputs: Tensor, labels: Tensor, name: Optional[str]) -> None:
        for x, y in iter_binary_chunks(inputs, labels, self.chunk_size, name):
            keep = valid_columns(y, self.ignore_index, self.exclude_background)
            if keep is not None:
                x, y = x.index_select(0, keep), y.index_select(0, keep)
            if y.numel() == 0:
                continue
            check_labels(y, 2, self.ignore_index, name)
            check_values(x, self.input_type, name)

    def _chunk_binary(self, x: Tensor, y: Tensor, acc: Tensor, workspace: dict) -> None:
        clamped = y.clamp(0, 1)
        probs = self.input_type == 'probs'
        drop = flag_problems(acc[self.state_size:], keep=self._keep(y), labels=y, clamped=clamped,
                             finite=torch.isfinite(x), low=x if probs else None, high=x if probs else None)
        self._accumulate_binary(x, clamped, drop, acc, workspace)

    def _accumulate_binary(self, x: Tensor, y: Tensor, drop: Tensor, acc: Tensor,
                           workspace: Dict[str, Tensor]) -> None:
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
        self._accumulate(conf, pred, y, drop, nll, brier, acc, workspace, p=probs)

    @property
    def _top_alone_in_last_cell(self) -> bool:
        return self.threshold == 0.5  # the other class then has 1 - c <= 1/2

    def _config(self) -> dict:
        cfg = super()._config()
        cfg['threshold'] = self.threshold
        return cfg

