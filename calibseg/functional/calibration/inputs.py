"""Validation and reshaping of the ``(inputs, labels)`` pairs fed to the calibration statistics.

Every check raises a ``ValueError`` that names the problem (and, with ``name``, the sample), never an
``assert``; the value checks look only at evaluated pixels (ignored pixels may hold anything).

**Deferred checks (no host-device synchronisation).** The statistics' update never reads a value back to the
host: per chunk, :func:`flag_problems` counts the evaluated pixels with non-finite inputs, probabilities outside
``[0, 1]``, labels outside ``[0, K)`` (not ``ignore_index``) or class probabilities that do not sum to 1, into a
small float64 *problem vector* on the inputs' device (fields :data:`PROBLEM_FIELDS`; the offending pixels are
left out of the statistics). :meth:`CalibrationStatistics.update` reads that vector once at its end and raises
the readable errors of :func:`check_labels`, :func:`check_values` and :func:`check_prob_sums` (one
synchronisation per call); with ``defer_checks=True`` it keeps the vector instead, and
:func:`describe_problems` words the error raised when metrics are computed (what
:class:`~calibseg.evaluation.PixelCalibrationMetric` does in mmseg's test loop).
"""
import math
from typing import Iterator, Optional, Sequence, Tuple

import torch
from torch import Tensor

from calibseg.utils import validation
from calibseg.utils.validation import check_choice

__all__ = ['INPUT_TYPES', 'PROB_SUM_ATOL', 'check_input_type', 'iter_multiclass_blocks', 'iter_binary_chunks',
           'valid_columns', 'check_labels', 'check_values', 'check_prob_sums', 'prob_sum_tolerance', 'values_ok',
           'PROBLEM_FIELDS', 'new_problems', 'merge_problems', 'flag_problems', 'describe_problems']

INPUT_TYPES = ('logits', 'probs')
#: largest accepted ``|Σ_k p_k - 1|`` of a pixel's class probabilities (``input_type='probs'``), by input dtype:
#: float32/float64 rows that a softmax or an average of softmaxes produced are within ``K · 1.2e-7``; float16 and
#: bfloat16 round every entry by up to ``2^-11`` / ``2^-8`` relative
PROB_SUM_ATOL = {torch.float64: 1e-3, torch.float32: 1e-3, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _prefix(name: Optional[str]) -> str:
    return f'{name}: ' if name else ''


def check_input_type(input_type: str) -> str:
    """``input_type`` must be ``'logits'`` or ``'probs'`` (no guessing from value ranges)."""
    return check_choice('input_type', input_type, INPUT_TYPES)


def _check_tensors(inputs: Tensor, labels: Tensor, name: Optional[str]) -> None:
    if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor):
        raise ValueError(f'{_prefix(name)}inputs and labels must be tensors, got '
                         f'{type(inputs).__name__} and {type(labels).__name__}')
    if not inputs.is_floating_point():
        raise ValueError(f'{_prefix(name)}inputs must be a floating-point tensor, got dtype {inputs.dtype}')
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f'{_prefix(name)}labels must be an integer tensor, got dtype {labels.dtype}')


def iter_multiclass_blocks(inputs: Tensor, labels: Tensor, num_classes: int, row_block: int,
                           name: Optional[str] = None) -> Iterator[Tuple[Tensor, Tensor]]:
    """Validate shapes (eagerly), then iterate over blocks ``x`` ``(K, L)`` and ``y`` ``(L,)`` (int64).

    Spatial inputs give one block per image (a view of the ``(K, H*W)`` logits, contiguous when the input is,
    so that a softmax over the classes needs no copy); ``(N, K)`` rows give transposed copies of ``row_block``
    rows. Accepted shapes: ``(N, K)`` with ``(N,)``, ``(K, H, W)`` with ``(H, W)``, and ``(N, K, *spatial)``
    with ``(N, *spatial)`` (a 3-D input matching both readings is read as ``(K, H, W)``).
    """
    _check_tensors(inputs, labels, name)
    if inputs.dim() != labels.dim() + 1 or inputs.dim() < 2:
        raise ValueError(f'{_prefix(name)}inputs of shape {tuple(inputs.shape)} do not match labels of shape '
                         f'{tuple(labels.shape)}: expected (N, K) with (N,), (K, H, W) with (H, W) or '
                         f'(N, K, H, W) with (N, H, W)')
    # 3-D inputs: (K, H, W) with (H, W) when that matches, else (N, K, L) with (N, L)
    dims = (0, 1) if inputs.dim() == 3 else (1,)
    for class_dim in dims:
        rest = inputs.shape[:class_dim] + inputs.shape[class_dim + 1:]
        if tuple(rest) == tuple(labels.shape):
            break
    else:
        raise ValueError(f'{_prefix(name)}inputs of shape {tuple(inputs.shape)} do not match labels of shape '
                         f'{tuple(labels.shape)} (expected the labels shape with a class dimension inserted)')
    if inputs.shape[class_dim] != num_classes:
        raise ValueError(f'{_prefix(name)}inputs of shape {tuple(inputs.shape)} have '
                         f'{inputs.shape[class_dim]} classes along dimension {class_dim}, expected '
                         f'num_classes={num_classes}')
    labels = labels.to(inputs.device)
    if inputs.dim() == 2:  # (N, K): pixels are rows
        return ((inputs[start:start + row_block].t().contiguous(), labels[start:start + row_block].long())
                for start in range(0, inputs.shape[0], row_block))
    if class_dim == 0:
        inputs, labels = inputs.unsqueeze(0), labels.unsqueeze(0)
    x3 = inputs.reshape(inputs.shape[0], num_classes, -1)
    y2 = labels.reshape(labels.shape[0], -1)
    return ((x3[n], y2[n].long()) for n in range(x3.shape[0]))


def iter_binary_chunks(inputs: Tensor, labels: Tensor, chunk_size: int,
                       name: Optional[str] = None) -> Iterator[Tuple[Tensor, Tensor]]:
    """Validate shapes (eagerly), then iterate over ``(x, y)`` chunks of one-channel maps, both of shape ``(P,)``.

    ``inputs`` has the shape of ``labels``, or that shape with a channel dimension of size 1 (dimension 1,
    or dimension 0 for ``(1, H, W)`` with ``(H, W)``).
    """
    _check_tensors(inputs, labels, name)
    if inputs.shape != labels.shape:
        class_dim = 0 if inputs.dim() == 3 else 1
        if (inputs.dim() == labels.dim() + 1 and inputs.dim() >= 2 and inputs.shape[class_dim] == 1
                and inputs.squeeze(class_dim).shape == labels.shape):
            inputs = inputs.squeeze(class_dim)
        else:
            raise ValueError(f'{_prefix(name)}binary inputs of shape {tuple(inputs.shape)} do not match labels '
                             f'of shape {tuple(labels.shape)}: expected the same shape, or a channel '
                             f'dimension of size 1 (e.g. (N, 1, H, W) with (N, H, W))')
    x = inputs.reshape(-1)
    y = labels.to(inputs.device).reshape(-1)
    return ((x[start:start + chunk_size], y[start:start + chunk_size].long())
            for start in range(0, x.shape[0], chunk_size))


def valid_columns(y: Tensor, ignore_index: Optional[int], exclude_background: bool) -> Optional[Tensor]:
    """Indices of the pixels to evaluate (not ``ignore_index``, not 0 with ``exclude_background``), or ``None``
    when every pixel is evaluated."""
    valid = None
    if ignore_index is not None:
        valid = y != ignore_index
    if exclude_background:
        valid = (y != 0) if valid is None else valid & (y != 0)
    if valid is None or bool(valid.all()):
        return None
    return valid.nonzero().squeeze(1)


def check_labels(y: Tensor, num_classes: int, ignore_index: Optional[int], name: Optional[str]) -> None:
    """Labels of evaluated pixels must lie in ``[0, num_classes)``; report the offending values
    (:func:`calibseg.utils.validation.check_labels`, the sample's ``name`` first)."""
    validation.check_labels(f'{_prefix(name)}labels', y, num_classes, ignore_index=ignore_index)


def values_ok(x: Tensor, input_type: str) -> bool:
    """Fast whole-tensor pre-check (one min/max pass): True when every value is finite (and in ``[0, 1]`` for
    probabilities), so that the per-chunk :func:`check_values` of evaluated pixels can be skipped."""
    if x.numel() == 0:
        return True
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    return input_type != 'probs' or (lo >= 0.0 and hi <= 1.0)


def prob_sum_tolerance(dtype: torch.dtype) -> float:
    """The documented tolerance :data:`PROB_SUM_ATOL` of a probability dtype."""
    return PROB_SUM_ATOL.get(dtype, 1e-3)


def check_prob_sums(p: Tensor, name: Optional[str], *, dim: int = 0) -> None:
    """Multi-class probabilities must sum to 1 over ``dim`` (within :data:`PROB_SUM_ATOL`) at every pixel.

    Rows that do not (unnormalised scores, a sigmoid head, a missing class channel) would give silently wrong
    confidences, NLL and Brier; the error names the worst pixel's sum and the tolerance.
    """
    if p.numel() == 0:
        return
    tol = prob_sum_tolerance(p.dtype)
    sums = p.sum(dim, dtype=torch.float64)
    dev = (sums - 1.0).abs()
    worst = int(dev.argmax())
    if float(dev[worst]) > tol:
        n_bad = int((dev > tol).sum())
        raise ValueError(f"{_prefix(name)}input_type='probs' but the class probabilities of {n_bad} of "
                         f'{sums.numel()} evaluated pixels do not sum to 1 (worst sum {float(sums[worst])!r}; '
                         f'tolerance {tol} for {p.dtype}); normalise them, or pass logits with '
                         f"input_type='logits'")


def check_values(x: Tensor, input_type: str, name: Optional[str]) -> None:
    """No NaN or inf; probabilities in ``[0, 1]`` when ``input_type == 'probs'`` (one min/max pass)."""
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(f'{_prefix(name)}inputs ({input_type}) contain {n_nan} NaN and {n_inf} inf values '
                         f'among the evaluated pixels')
    if input_type == 'probs' and (lo < 0.0 or hi > 1.0):
        raise ValueError(f"{_prefix(name)}input_type='probs' but inputs have values outside [0, 1] "
                         f'(min {lo!r}, max {hi!r}); pass logits with input_type=\'logits\'')


# ------------------------------------------------------------------------------------------------------------
# Deferred checks
# ------------------------------------------------------------------------------------------------------------
#: fields of the problem vector: pixel counts (``nonfinite``, ``range``, ``labels``, ``sums``), the smallest and
#: largest offending probability, the smallest and largest label (offending ones when below 0 or above ``K - 1``)
#: and the largest ``|Σ_k p_k - 1|`` among pixels that fail the sum check
PROBLEM_FIELDS = ('nonfinite', 'range', 'range_min', 'range_max', 'labels', 'label_min', 'label_max', 'sums',
                  'sum_dev')
_COUNTS = [0, 1, 4, 7]
_MINS = [2, 5]
_MAXES = [3, 6, 8]
_INIT = (0.0, 0.0, math.inf, -math.inf, 0.0, math.inf, -math.inf, 0.0, 0.0)


def new_problems(device: torch.device, out: Optional[Tensor] = None) -> Tensor:
    """An empty problem vector (float64, ``len(PROBLEM_FIELDS)``), or ``out`` reset to one in place."""
    if out is None:
        out = torch.empty(len(PROBLEM_FIELDS), dtype=torch.float64, device=device)
    for i, v in enumerate(_INIT):
        out[i:i + 1].fill_(v)  # fills, not a host-to-device copy
    return out


def merge_problems(into: Tensor, other: Tensor) -> Tensor:
    """Merge the problem vector ``other`` into ``into`` (counts add, minima and maxima combine) in place."""
    into[:2] += other[:2]
    into[4:5] += other[4:5]
    into[7:8] += other[7:8]
    torch.minimum(into[2:3], other[2:3], out=into[2:3])
    torch.minimum(into[5:6], other[5:6], out=into[5:6])
    torch.maximum(into[3:4], other[3:4], out=into[3:4])
    torch.maximum(into[6:7], other[6:7], out=into[6:7])
    torch.maximum(into[8:9], other[8:9], out=into[8:9])
    return into


def _masked_extreme(values: Tensor, mask: Tensor, fill: float, reduce) -> Tensor:
    """``reduce`` (``amin``/``amax``) of ``values`` where ``mask``, ``fill`` where not (``P >= 1`` values)."""
    return reduce(torch.where(mask, values, fill))


def flag_problems(problems: Tensor, *, keep: Tensor, labels: Tensor, clamped: Tensor, finite: Optional[Tensor],
                  low: Optional[Tensor] = None, high: Optional[Tensor] = None, sums: Optional[Tensor] = None,
                  sum_tolerance: float = 1e-3) -> Tensor:
    """Flag one chunk's problems into ``problems`` (in place, no readback) and return the pixels to leave out.

    Args:
        problems: the problem vector (see :data:`PROBLEM_FIELDS`).
        keep: ``(P,)`` bool, the evaluated pixels (not ignored).
        labels: ``(P,)`` integer labels.
        clamped: ``labels.clamp(0, K - 1)`` (a label differs from it iff it is outside ``[0, K)``).
        finite: ``(P,)`` bool, pixels whose inputs are all finite, or ``None`` when all are known to be.
        low, high: ``(P,)`` smallest and largest probability of every pixel, for the ``[0, 1]`` check of
            ``input_type='probs'`` (``None`` for logits).
        sums: ``(P,)`` float64 class sums of multi-class probabilities, or ``None``.
        sum_tolerance: largest accepted ``|sums - 1|``.

    Returns:
        ``(P,)`` bool: pixels to leave out of the statistics (ignored, or evaluated with a problem).
    """
    bad_label = clamped != labels
    bad_label &= keep
    problems[4:5] += bad_label.sum()
    # the offending labels among values in [0, K): the minimum is one only when negative, the maximum when >= K
    lowest, highest = torch.aminmax(torch.where(bad_label, labels, clamped))
    torch.minimum(problems[5:6], lowest, out=problems[5:6])
    torch.maximum(problems[6:7], highest, out=problems[6:7])
    drop = ~keep
    drop |= bad_label
    if finite is not None:
        bad = keep & ~finite  # evaluated pixels with a NaN or an infinite value
        problems[0:1] += bad.sum()
        drop |= bad
    if low is not None:
        out_of_range = (low < 0) | (high > 1)
        out_of_range &= ~drop
        problems[1:2] += out_of_range.sum()
        torch.minimum(problems[2:3], _masked_extreme(low.double(), out_of_range, math.inf, torch.amin),
                      out=problems[2:3])
        torch.maximum(problems[3:4], _masked_extreme(high.double(), out_of_range, -math.inf, torch.amax),
                      out=problems[3:4])
        drop |= out_of_range
    if sums is not None:
        dev = (sums - 1.0).abs_()
        bad_sum = (dev > sum_tolerance) & ~drop
        problems[7:8] += bad_sum.sum()
        torch.maximum(problems[8:9], _masked_extreme(dev, bad_sum, 0.0, torch.amax), out=problems[8:9])
        drop |= bad_sum
    return drop


def describe_problems(values: Sequence[float], *, num_classes: int, ignore_index: Optional[int],
                      input_type: str, sum_tolerance: float = 1e-3) -> list:
    """Sentences naming the problems of a problem vector read back as floats (empty when there are none)."""
    v = dict(zip(PROBLEM_FIELDS, values))
    out = []
    if v['labels']:
        extremes = ([f"as low as {int(v['label_min'])}"] if v['label_min'] < 0 else []) \
            + ([f"as high as {int(v['label_max'])}"] if v['label_max'] >= num_classes else [])
        out.append(f"labels of {int(v['labels'])} evaluated pixel(s) are outside [0, {num_classes}) and not "
                   f"ignore_index={ignore_index} (values {' and '.join(extremes)})")
    if v['nonfinite']:
        out.append(f"inputs ({input_type}) of {int(v['nonfinite'])} evaluated pixel(s) contain NaN or inf values")
    if v['range']:
        out.append(f"input_type='probs' but inputs of {int(v['range'])} evaluated pixel(s) have values outside "
                   f"[0, 1] (min {v['range_min']!r}, max {v['range_max']!r}); pass logits with "
                   "input_type='logits'")
    if v['sums']:
        out.append(f"input_type='probs' but the class probabilities of {int(v['sums'])} evaluated pixel(s) do not "
                   f"sum to 1 (largest |sum - 1| {v['sum_dev']!r}; tolerance {sum_tolerance}); normalise them, or "
                   "pass logits with input_type='logits'")
    return out
