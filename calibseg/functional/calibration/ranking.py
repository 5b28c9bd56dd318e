r"""Metrics that depend on the confidence *order*: KS, AUROC, AURC, FPR95, AUPR-error.

On grid statistics the order between fine cells is exact and the order inside a cell unknown; each function
treats the pixels of a cell as tied and has a matching bound against the exact per-pixel value
(:func:`ranking_bounds`), which is zero for the single-valued cells (exact 0 and exact 1).

* **KSCE** (Gupta et al., ICLR 2021): ``max_t |(1/N) Σ_{i: c_i <= t} (a_i - c_i)|``, the largest gap between
  the cumulative accuracy and confidence curves over thresholds ``t`` (equal to the sorted-cumsum definition
  for distinct confidences; tie-invariant). The grid value takes ``t`` at cell ends, so
  ``KS_cell <= KS <= KS_cell + max_j max(A_j (1 - lo_j), (n_j - A_j) hi_j)/N`` over multi-valued cells.
* **AUROC** of the confidence as a score for correctness: ``P(c_+ > c_-) + P(c_+ = c_-)/2`` (``+`` correct,
  ``-`` wrong pixels). Pairs inside one cell count 1/2, so ``|Δ| <= Σ_j A_j (n_j - A_j) / (2 N_+ N_-)`` over
  multi-valued cells. NaN when every pixel is correct or every pixel is wrong (documented, not an error).
* **AURC** (Geifman, Uziel & El-Yaniv, ICLR 2019): ``(1/N) Σ_{k=1}^{N} E_k / k`` with ``E_k`` the errors among
  the ``k`` most confident pixels. Inside a cell (errors ``e_j`` of ``n_j``, after ``k_0`` pixels and ``E_0``
  errors) the expected error count is linear, which gives the exact tie-averaged value
  ``e_j + (E_0 - ρ_j k_0)(ψ(k_0 + n_j + 1) - ψ(k_0 + 1))`` with ``ρ_j = e_j/n_j`` and the digamma ``ψ``; any
  order of the pixels inside the cells is within
  ``(1/N) Σ_j [e_j (n_j - e_j)/n_j] (ψ(k_0 + n_j + 1) - ψ(k_0 + 1))``.

* **FPR95** (failure detection, e.g. Corbière et al., NeurIPS 2019): with ``k = ceil(0.95 N_+)``, the
  threshold ``τ`` is the confidence of the ``k``-th most confident correct pixel (the largest threshold that
  keeps at least 95 % of the correct pixels), and ``FPR95 = #{wrong: c >= τ} / N_-``. On the grid, ``τ`` lies
  in the cell ``j`` where the cumulative count of correct pixels (from the top) reaches ``k``; with ``A`` correct
  and ``E`` wrong pixels in the cells above, ``a_j`` correct and ``e_j`` wrong pixels in ``j`` and
  ``k' = k - A``, the value is ``(E + e_j k'/(a_j + 1)) / N_-`` (the expectation over the orders of the pixels
  inside the cell; ``(E + e_j) / N_-`` in a single-valued cell, where all are tied at ``τ``). Any order inside
  the cell is within ``e_j max(k'/(a_j + 1), 1 - k'/(a_j + 1)) / N_-`` (zero for single-valued cells).
* **AUPR_err**: average precision of detecting *wrong* pixels (positives) by *low* confidence,
  ``Σ_t (R_t - R_{t-1}) P_t`` over the distinct thresholds ``t`` in increasing confidence (scikit-learn's
  ``average_precision_score`` of ``1 - a`` against ``-c``, ties grouped). On the grid the pixels of a cell are
  one group; each wrong pixel of a multi-valued cell ``j`` (after ``T`` wrong and ``F`` correct pixels of lower
  cells) has, in any order, a precision in ``[(T + 1)/(T + 1 + F + a_j), (T + e_j)/(T + e_j + F)]``, which
  bounds the difference by ``Σ_j (e_j/N_-)`` times that interval's width.
  FPR95 and AUPR_err are NaN when every pixel is correct or every pixel is wrong.

Fractions (the metric dictionary multiplies by 100).
"""
from typing import Dict

import torch
from torch import Tensor

__all__ = ['ks_error', 'auroc', 'aurc', 'fpr_at_95', 'aupr_error', 'ranking_bounds']


def _cells(stats):
    count = stats.count.detach().cpu()
    keep = count > 0
    n = count[keep]
    a = stats.sum_correct.detach().cpu()[keep]
    s = stats.sum_conf.detach().cpu()[keep]
    lo = stats.grid.lower[keep]
    hi = stats.grid.upper[keep]
    multi = ~stats.grid.single_valued[keep]
    return n, a, s, lo, hi, multi


def ks_error(stats) -> float:
    """Kolmogorov–Smirnov calibration error (fraction), evaluated at the ends of the fine cells."""
    n, a, s, *_ = _cells(stats)
    cum = torch.cumsum(a - s, 0)
    return float(cum.abs().max().clamp_min(0.0)) / float(n.sum())


def auroc(stats) -> float:
    """AUROC of confidence for correctness, ties within a cell counted 1/2 (fraction; NaN if undefined)."""
    n, a, *_ = _cells(stats)
    neg = n - a
    n_pos, n_neg = float(a.sum()), float(neg.sum())
    if n_pos == 0.0 or n_neg == 0.0:
        return float('nan')
    below = torch.cumsum(neg, 0) - neg
    return float((a * (below + 0.5 * neg)).sum()) / (n_pos * n_neg)


def _aurc_terms(n: Tensor, a: Tensor):
    """Descending-confidence AURC terms: per-cell value and bound terms."""
    n, a = n.flip(0), a.flip(0)
    e = n - a
    k0 = torch.cumsum(n, 0) - n
    e0 = torch.cumsum(e, 0) - e
    rho = e / n
    harm = torch.special.digamma(k0 + n + 1.0) - torch.special.digamma(k0 + 1.0)
    value = e + (e0 - rho * k0) * harm
    spread = e * (n - e) / n * harm
    return value, spread


def aurc(stats) -> float:
    """Area under the risk–coverage curve (fraction), averaged over the orders of pixels tied in a cell."""
    n, a, *_ = _cells(stats)
    value, _ = _aurc_terms(n, a)
    return float(value.sum()) / float(n.sum())


def _fpr_terms(stats):
    """``(value, bound)`` of FPR95 (fractions); NaN when undefined."""
    n, a, _, _, _, multi = _cells(stats)
    neg = n - a
    n_pos, n_neg = float(a.sum()), float(neg.sum())
    if n_pos == 0.0 or n_neg == 0.0:
        return float('nan'), float('nan')
    k = -(-95 * int(n_pos) // 100)  # ceil(0.95 N_+) in integers: correct pixels to keep
    a_top, e_top = a.flip(0), neg.flip(0)
    cum = torch.cumsum(a_top, 0)
    j = int(torch.searchsorted(cum, torch.tensor([float(k)], dtype=cum.dtype))[0])
    above_a = float(cum[j] - a_top[j])
    above_e = float(e_top[:j].sum())
    a_j, e_j = float(a_top[j]), float(e_top[j])
    if not bool(multi.flip(0)[j]):
        return (above_e + e_j) / n_neg, 0.0
    frac = (k - above_a) / (a_j + 1.0)
    return (above_e + e_j * frac) / n_neg, e_j * max(frac, 1.0 - frac) / n_neg


def fpr_at_95(stats) -> float:
    """FPR95: fraction of wrong pixels at least as confident as the 95 %-TPR threshold (NaN if undefined)."""
    return _fpr_terms(stats)[0]


def _aupr_terms(stats):
    n, a, _, _, _, multi = _cells(stats)
    e = n - a
    n_pos, n_neg = float(e.sum()), float(a.sum())  # positives: wrong pixels
    if n_pos == 0.0 or n_neg == 0.0:
        return float('nan'), float('nan')
    tp = torch.cumsum(e, 0)  # cells in increasing confidence = decreasing score
    fp = torch.cumsum(a, 0)
    has = e > 0
    value = float((e[has] * tp[has] / (tp[has] + fp[has])).sum()) / n_pos
    t0, f0 = tp - e, fp - a
    hi = (t0 + e) / (t0 + e + f0).clamp_min(1.0)
    lo = (t0 + 1.0) / (t0 + 1.0 + f0 + a)
    spread = (e * (hi - lo))[has & multi]
    return value, float(spread.sum()) / n_pos


def aupr_error(stats) -> float:
    """Area under the precision-recall curve of wrong pixels ranked by low confidence (fraction; NaN if
    undefined)."""
    return _aupr_terms(stats)[0]


def ranking_bounds(stats) -> Dict[str, float]:
    """Bounds (fractions) on ``|grid value - exact per-pixel value|`` for ``KSCE``, ``AUROC``, ``AURC``,
    ``FPR95`` and ``AUPR_err``."""
    n, a, s, lo, hi, multi = _cells(stats)
    big_n = float(n.sum())
    ks = torch.maximum(a * (1.0 - lo), (n - a) * hi)[multi]
    neg = n - a
    n_pos, n_neg = float(a.sum()), float(neg.sum())
    if n_pos == 0.0 or n_neg == 0.0:
        roc = float('nan')
    else:
        roc = float((a * neg)[multi].sum()) / (2.0 * n_pos * n_neg)
    _, spread = _aurc_terms(n, a)
    return dict(KSCE=(float(ks.max()) if ks.numel() else 0.0) / big_n, AUROC=roc,
                AURC=float(spread.sum()) / big_n, FPR95=_fpr_terms(stats)[1], AUPR_err=_aupr_terms(stats)[1])
