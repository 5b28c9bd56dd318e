r"""Calibration and selective-prediction metrics that depend on the confidence *order*: KS, AUROC, AURC.

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

Fractions (the metric dictionary multiplies by 100).
"""
from typing import Dict

import torch
from torch import Tensor

__all__ = ['ks_error', 'auroc', 'aurc', 'ranking_bounds']


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


def ranking_bounds(stats) -> Dict[str, float]:
    """Bounds (fractions) on ``|grid value - exact per-pixel value|`` for ``KSCE``, ``AUROC`` and ``AURC``."""
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
                AURC=float(spread.sum()) / big_n)
