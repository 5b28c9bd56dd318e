r"""Binned calibration errors (equal-width and equal-mass bins) from grid statistics.

**Equal-width bins** ``(b/B, (b+1)/B]`` (``c = 0`` in the first bin, ``c = 1`` in the last) are unions of base
cells when ``B`` divides ``G = 3000``, so the per-bin sums, and every equal-width metric, are *exact*.

**Equal-mass bins** hold ``N/B`` pixels each: with the ranks ``0..N-1`` of the pixels sorted by confidence
split like ``numpy.array_split`` (the first ``N mod B`` bins one pixel larger), every fine cell goes whole to
the bin of its median rank, so identical confidences (one fine cell) are never split. Compared with any exact
per-pixel split of the sorted pixels (ties in any order), the bins differ only by the ``m`` pixels of the cells
that straddle a rank boundary, and since ``ECE = (1/N) Σ_b |Σ_{i∈b} (a_i - c_i)|`` changes by at most
``2|a_i - c_i| <= 2`` per moved pixel, ``|ECE_em(cells) - ECE_em(per pixel)| <= 2m/N``
(:func:`equal_mass_bound`; ``m`` is at most half a cell per boundary, zero when no cell straddles one).

Per bin ``b``: ``n_b``, ``conf_b`` (mean confidence), ``acc_b`` (mean correctness);
``ECE = Σ_b (n_b/N)|acc_b - conf_b|``; ``MCE = max_{n_b > 0} |acc_b - conf_b|``;
``RMSCE = sqrt(Σ_b (n_b/N)(acc_b - conf_b)^2)``; debiased ``dECE = sqrt(max(0, Σ_{n_b >= 2} (n_b/N)
[(acc_b - conf_b)^2 - acc_b(1 - acc_b)/(n_b - 1)]))`` (Kumar, Liang & Ma, NeurIPS 2019);
``OE = Σ_b (n_b/N) conf_b max(conf_b - acc_b, 0)`` and ``UE = Σ_b (n_b/N) conf_b max(acc_b - conf_b, 0)``.
Class-wise (``cwCE``, Nixon et al. 2019): for every class ``k``, bin ``p_{i,k}`` against ``1[y_i = k]`` over
all pixels, ``ECE_k = Σ_b |Σ_{i∈b} (1[y_i = k] - p_{i,k})| / N``, averaged over the classes (over ``1..K-1``
with ``exclude_background``).

Functions return fractions (the metric dictionary multiplies by 100).
"""
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from calibseg.utils.validation import check_choice, check_positive_int

__all__ = ['SCHEMES', 'bin_sums', 'equal_mass_bins', 'equal_mass_bound', 'binned_errors', 'classwise_ece',
           'reliability_bins']

SCHEMES = ('width', 'mass')


def _check_bins(n_bins: int) -> None:
    check_positive_int('n_bins', n_bins)


def equal_mass_bins(counts: Tensor, n_bins: int) -> Tuple[Tensor, Tensor]:
    """Equal-mass bin of every fine cell and the number of pixels placed off their exact rank bin.

    Args:
        counts: ``(R, cells)`` (or ``(cells,)``) float64 pixel counts per fine cell (cells in confidence
            order), one row per histogram (top-label, or one per class).
        n_bins: ``B``.

    Returns:
        ``(bins, moved)``: ``(R, cells)`` int64 bin of each cell (the bin of its median rank), and ``(R,)``
        float64 number of pixels whose ``array_split`` rank bin differs from their cell's bin.
    """
    _check_bins(n_bins)
    if counts.dim() == 1:
        bins, moved = equal_mass_bins(counts.unsqueeze(0), n_bins)
        return bins.squeeze(0), moved.squeeze(0)
    total = counts.sum(-1, keepdim=True)  # (R, 1)
    end = torch.cumsum(counts, -1)
    start = end - counts
    median = start + (counts - 1.0).clamp_min(0.0) / 2.0
    q = torch.floor(total / n_bins)
    r = total - q * n_bins
    b = torch.arange(n_bins + 1, dtype=counts.dtype, device=counts.device)
    bounds = b * q + torch.minimum(b, r)  # (R, B+1): first rank of bin b
    if n_bins == 1:
        bins = torch.zeros(counts.shape, dtype=torch.long, device=counts.device)
    else:
        bins = torch.searchsorted(bounds[:, 1:-1].contiguous(), median.contiguous(), right=True)
    lo = torch.gather(bounds, 1, bins)
    hi = torch.gather(bounds, 1, bins + 1)
    inside = (torch.minimum(end, hi) - torch.maximum(start, lo)).clamp_min(0.0)
    moved = (counts - inside).sum(-1)
    return bins, moved


def equal_mass_bound(counts: Tensor, n_bins: int) -> Tensor:
    """Bound ``2m/N`` on ``|ECE_em(cells) - ECE_em(exact per-pixel split)|`` for each row of ``counts``."""
    _, moved = equal_mass_bins(counts, n_bins)
    return 2.0 * moved / counts.sum(-1).clamp_min(1.0)


def bin_sums(grid, count: Tensor, *values: Tensor, n_bins: int, scheme: str = 'width') -> Tuple[Tensor, ...]:
    """Sum ``count`` and ``values`` (each ``(R, cells)`` or ``(cells,)``) over the bins: ``(R, B)`` each.

    ``scheme='width'`` uses the exact equal-width bins (``B`` must divide the grid's base cell count),
    ``'mass'`` the equal-mass bins of :func:`equal_mass_bins` computed from ``count``.
    """
    _check_bins(n_bins)
    squeeze = count.dim() == 1
    rows = [t.unsqueeze(0) if squeeze else t for t in (count, *values)]
    if scheme == 'width':
        bins = grid.bin_of_cells(n_bins).to(count.device).expand_as(rows[0])
    elif scheme == 'mass':
        bins = equal_mass_bins(rows[0], n_bins)[0]
    else:
        check_choice('scheme', scheme, SCHEMES)
    out = []
    for t in rows:
        o = torch.zeros(t.shape[0], n_bins, dtype=torch.float64, device=t.device)
        out.append(o.scatter_add_(1, bins, t.double()))
    return tuple(o.squeeze(0) if squeeze else o for o in out)


def binned_errors(n: Tensor, s_conf: Tensor, s_acc: Tensor, total: Optional[float] = None) -> Dict[str, float]:
    """ECE, MCE, RMSCE, dECE, OE and UE (fractions) from per-bin count, Σ confidence and Σ correctness ``(B,)``."""
    big_n = float(n.sum()) if total is None else float(total)
    nz = n > 0
    n_, c_, a_ = n[nz], s_conf[nz], s_acc[nz]
    conf, acc = c_ / n_, a_ / n_
    gap = acc - conf
    w = n_ / big_n
    ece = float((a_ - c_).abs().sum()) / big_n
    mce = float(gap.abs().max()) if gap.numel() else 0.0
    rmsce = float((w * gap * gap).sum()) ** 0.5
    two = n_ >= 2
    debias = (w[two] * (gap[two] ** 2 - acc[two] * (1.0 - acc[two]) / (n_[two] - 1.0))).sum()
    dece = max(float(debias), 0.0) ** 0.5
    oe = float((w * conf * (-gap).clamp_min(0.0)).sum())
    ue = float((w * conf * gap.clamp_min(0.0)).sum())
    return dict(ECE=ece, MCE=mce, RMSCE=rmsce, dECE=dece, OE=oe, UE=ue)


def classwise_ece(stats, n_bins: int, *, scheme: str = 'width') -> Tensor:
    """Per-class ECE ``(K,)`` (fractions, each normalised by ``N``, all pixels) of the class-wise statistics."""
    cnt, s_p, s_l = bin_sums(stats.grid, stats.cw_count, stats.cw_sum_prob, stats.cw_sum_label,
                             n_bins=n_bins, scheme=scheme)
    return (s_l - s_p).abs().sum(-1) / cnt.sum(-1).clamp_min(1.0)


def reliability_bins(stats, n_bins: int = 15, *, scheme: str = 'width', classwise: bool = False
                     ) -> Dict[str, Tensor]:
    """Per-bin statistics for reliability diagrams.

    Args:
        stats: :class:`~calibseg.functional.calibration.statistics.CalibrationStatistics`.
        n_bins: ``B``.
        scheme: ``'width'`` (equal-width, ``B`` must divide 3000) or ``'mass'`` (equal-mass).
        classwise: per class (``p_{i,k}`` against ``1[y_i = k]``) instead of top-label.

    Returns:
        Dict of float64 CPU tensors, ``(B,)`` top-label or ``(K, B)`` class-wise: ``count`` (pixels),
        ``confidence`` (mean confidence / mean ``p_k``), ``accuracy`` (mean correctness / frequency of class
        ``k``), ``lower`` and ``upper`` (bin edges: the fixed edges for ``'width'``, the range of the cells'
        edges for ``'mass'``). Empty bins have NaN means.
    """
    grid = stats.grid
    if classwise:
        cnt, s_c, s_a = (t.detach().cpu() for t in (stats.cw_count, stats.cw_sum_prob, stats.cw_sum_label))
    else:
        cnt, s_c, s_a = (t.detach().cpu() for t in (stats.count, stats.sum_conf, stats.sum_correct))
    n, conf, acc = bin_sums(grid, cnt, s_c, s_a, n_bins=n_bins, scheme=scheme)
    out = dict(count=n, confidence=conf / n, accuracy=acc / n)
    if scheme == 'width':
        edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
        lower, upper = edges[:-1].expand_as(n).clone(), edges[1:].expand_as(n).clone()
    else:
        rows = cnt if classwise else cnt.unsqueeze(0)
        bins = equal_mass_bins(rows, n_bins)[0]
        occupied = rows > 0
        lo_e = torch.where(occupied, grid.lower.expand_as(rows), torch.full_like(rows, float('inf')))
        hi_e = torch.where(occupied, grid.upper.expand_as(rows), torch.full_like(rows, float('-inf')))
        lower = torch.full((rows.shape[0], n_bins), float('inf'), dtype=torch.float64)
        upper = torch.full((rows.shape[0], n_bins), float('-inf'), dtype=torch.float64)
        lower = lower.scatter_reduce(1, bins, lo_e, 'amin')
        upper = upper.scatter_reduce(1, bins, hi_e, 'amax')
        empty = ~torch.isfinite(lower)
        lower[empty], upper[empty] = float('nan'), float('nan')
        if not classwise:
            lower, upper = lower.squeeze(0), upper.squeeze(0)
    out.update(lower=lower, upper=upper)
    return out
