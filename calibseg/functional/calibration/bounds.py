r"""Grid-error bound of the equal-mass binned errors (``ECE_em_B``, ``cwCE_em_B``).

On the grid every fine cell goes whole to the equal-mass bin of its median rank (:mod:`.binned`); an exact
per-pixel split of the sorted pixels (ties in any order) differs only for the cells that straddle a rank boundary.
With the residuals ``r_i = a_i - c_i`` (top-label) or ``1[y_i = k] - p_{i,k}`` (class-wise),
``ECE_em = (1/N) Σ_b |Σ_{i∈b} r_i|``; moving the pixels of straddling cells one cell at a time (triangle
inequality) the difference is at most ``(2/N) Σ_j β_j`` over the straddling cells ``j`` with

* ``β_j <= Σ_{moved i} |r_i| <= min(m_j ρ_j, U_j)``: ``m_j`` pixels of the cell leave its bin, each with
  ``|r_i| <= ρ_j = max(1 - lower_j, upper_j)``, and ``U_j = A_j (1 - lower_j) + (n_j - A_j) upper_j`` bounds
  ``Σ_{i∈j} |r_i|`` (``A_j`` correct pixels, or pixels of class ``k``, confidences in ``[lower_j, upper_j]``);
* for a *same-sign* cell (every ``r_i`` of one sign: an exact 0 or exact 1.0 cell, or one whose pixels are all
  correct or all wrong) also ``β_j <= Σ U_l`` over the other cells ``l`` whose ranks meet the bins the cell touches:
  within those bins ``|O + X_b|`` with same-sign ``X_b`` moves by at most ``2|O|`` however the cell is split.

The second rule is what matters for segmentation: float32 softmax saturates, so the exact-1.0 cell holds a large
share of the pixels and straddles many bins, but its residuals (``0`` or ``-1``) share a sign, and splitting it
changes ``ECE_em`` only through the few other pixels in its boundary bins (the previous ``2m/N`` bound counted every
such pixel as moved and reported 51-100 points where the difference was about 0).
"""
import torch
from torch import Tensor

from .binned import equal_mass_bins

__all__ = ['equal_mass_error_bound']


def equal_mass_error_bound(counts: Tensor, targets: Tensor, lower: Tensor, upper: Tensor, single_valued: Tensor,
                           n_bins: int) -> Tensor:
    """Bound (fraction) on ``|ECE_em(cells) - ECE_em(any exact per-pixel split)|`` for each row.

    Args:
        counts: ``(R, cells)`` or ``(cells,)`` float64 pixel counts per fine cell (cells in confidence order).
        targets: same shape, correct pixels (top-label) or pixels of the class (class-wise) per cell.
        lower, upper: ``(cells,)`` float64 confidence range of every fine cell.
        single_valued: ``(cells,)`` bool, True for the cells that hold one value only (exact 0 and exact 1).
        n_bins: ``B``.

    Returns:
        ``(R,)`` (or a 0-d tensor) float64 bounds.
    """
    squeeze = counts.dim() == 1
    n = counts.unsqueeze(0) if squeeze else counts
    a = (targets.unsqueeze(0) if squeeze else targets).to(n.dtype)
    bins = equal_mass_bins(n, n_bins)[0]
    total = n.sum(-1, keepdim=True)
    end = torch.cumsum(n, -1)
    start = end - n
    q = torch.floor(total / n_bins)
    rem = total - q * n_bins
    b = torch.arange(n_bins + 1, dtype=n.dtype)
    edges = b * q + torch.minimum(b, rem)  # (R, B+1): first rank of every bin, then N
    lo_rank, hi_rank = torch.gather(edges, 1, bins), torch.gather(edges, 1, bins + 1)
    inside = (torch.minimum(end, hi_rank) - torch.maximum(start, lo_rank)).clamp_min(0.0)
    moved = n - inside
    lower, upper = lower.to(n.dtype), upper.to(n.dtype)
    rho = torch.maximum(1.0 - lower, upper)
    u = a * (1.0 - lower) + (n - a) * upper
    beta = torch.minimum(moved * rho, u)
    same = (a == 0) | (a == n) | single_valued.to(n.device)
    # bins touched by each cell in a per-pixel split: those of its first and last rank
    last_rank = (end - 1.0).clamp_min(0.0)
    inner = edges[:, 1:-1].contiguous()
    first_bin = torch.searchsorted(inner, start.contiguous(), right=True)
    last_bin = torch.searchsorted(inner, last_rank.contiguous(), right=True)
    w_start, w_end = torch.gather(edges, 1, first_bin), torch.gather(edges, 1, last_bin + 1)
    # other cells whose rank range [start, end) meets [w_start, w_end): a contiguous run of cells
    cum_u = torch.cat([torch.zeros_like(u[:, :1]), torch.cumsum(u, -1)], -1)
    first_cell = torch.searchsorted(end.contiguous(), w_start.contiguous(), right=True)
    last_cell = torch.searchsorted(start.contiguous(), w_end.contiguous(), right=False)  # exclusive
    others = torch.gather(cum_u, 1, last_cell) - torch.gather(cum_u, 1, first_cell) - u
    beta = torch.where(same & (moved > 0), torch.minimum(beta, others.clamp_min(0.0)), beta)
    beta = torch.where(moved > 0, beta, torch.zeros_like(beta))
    out = 2.0 * beta.sum(-1) / total.squeeze(-1).clamp_min(1.0)
    return out.squeeze(0) if squeeze else out
