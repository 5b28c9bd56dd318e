"""Kendall's tau-b between rankings of models (Kendall 1945), in O(n log n) (Knight 1966), ties handled."""
from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np

__all__ = ['count_inversions', 'kendall_tau_b', 'tau_matrix', 'tau_noise']


def _tied_pairs(*columns: np.ndarray) -> int:
    """Number of pairs equal in every given column: ``sum_groups t (t - 1) / 2``."""
    _, counts = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def count_inversions(values: np.ndarray) -> int:
    """Pairs ``i < j`` with ``values[i] > values[j]`` (ties are not inversions), by bottom-up merge passes.

    Each pass merges runs of ``w`` sorted values pairwise; for a value ``v`` of a right run, the values of its left
    run greater than ``v`` are found with ``searchsorted`` on keys ``block * (n + 1) + rank``, which keep every run
    sorted and the runs in order, so one pass is a few vectorised O(n log n) operations (log n passes).

    Example:
        >>> count_inversions(np.array([3, 1, 2, 2]))
        3
    """
    _, a = np.unique(np.asarray(values), return_inverse=True)
    a = a.astype(np.int64).ravel()
    n = a.size
    position = np.arange(n)
    inversions, width = 0, 1
    while width < n:
        block = position // (2 * width)
        right = (position % (2 * width)) >= width
        key = block * (n + 1) + a
        left_keys = key[~right]
        block_end = np.searchsorted(left_keys, block[right] * (n + 1) + n, side='right')
        not_greater = np.searchsorted(left_keys, key[right], side='right')
        inversions += int((block_end - not_greater).sum())
        a = np.sort(key) - block * (n + 1)
        width *= 2
    return inversions


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two rankings, over the positions where both values are finite.

    ``tau_b = (n_c - n_d) / sqrt((n_0 - n_1) (n_0 - n_2))`` with ``n_0 = n (n - 1) / 2`` pairs, ``n_1`` / ``n_2``
    pairs tied in ``x`` / ``y``, ``n_c`` / ``n_d`` concordant / discordant pairs (Kendall 1945). Knight (1966):
    after sorting by ``(x, y)`` the discordant pairs are the inversions of ``y``, and
    ``n_c - n_d = n_0 - n_1 - n_2 + n_3 - 2 n_d`` with ``n_3`` the pairs tied in both. ``nan`` with fewer than two
    pairs or a constant variable.

    Example:
        >>> kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4])
        0.6666666666666666
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f'x and y must be 1-D of the same length, got shapes {x.shape} and {y.shape}')
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = x.size
    if n < 2:
        return math.nan
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    n0 = n * (n - 1) // 2
    n1, n2, n3 = _tied_pairs(x), _tied_pairs(y), _tied_pairs(x, y)
    denominator = math.sqrt(float(n0 - n1) * float(n0 - n2))
    if denominator == 0:
        return math.nan
    return (n0 - n1 - n2 + n3 - 2 * count_inversions(y)) / denominator


def tau_matrix(columns: Dict[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """``(len(keys), len(keys))`` symmetric matrix of tau-b between the named columns (1 on the diagonal)."""
    m = np.eye(len(keys))
    for i, a in enumerate(keys):
        for j in range(i + 1, len(keys)):
            m[i, j] = m[j, i] = kendall_tau_b(columns[a], columns[keys[j]])
    return m


def tau_noise(n: int) -> float:
    """Standard deviation of tau between independent rankings of ``n`` items (no ties):
    ``sqrt(2 (2n + 5) / (9 n (n - 1)))``.

    Example:
        >>> round(tau_noise(32), 3)
        0.124
    """
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n > 1 else math.nan
