"""calibseg.study.kendall: Kendall tau-b against a naive pair count and scipy, inversions against brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
from study_testing import naive_tau_b

from calibseg.study.kendall import count_inversions, kendall_tau_b, tau_matrix, tau_noise


@pytest.mark.parametrize('n', [2, 3, 8, 33, 100])
def test_kendall_tau_b_equals_the_naive_pair_count_with_ties(n):
    rng = np.random.default_rng(n)
    for levels in (3, 10, 1000):  # heavy ties, some ties, almost none
        x = rng.integers(0, levels, n).astype(float)
        y = (x + rng.integers(0, levels, n)).astype(float)
        expected = naive_tau_b(x, y)
        got = kendall_tau_b(x, y)
        assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_b_agrees_with_scipy_and_skips_non_finite_pairs():
    stats = pytest.importorskip('scipy.stats')
    rng = np.random.default_rng(0)
    x = rng.normal(size=400).round(1)
    y = x + rng.normal(size=400).round(1)
    assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    x[[3, 7]], y[11] = np.nan, np.inf
    keep = np.isfinite(x) & np.isfinite(y)
    assert kendall_tau_b(x, y) == pytest.approx(naive_tau_b(x[keep], y[keep]), abs=1e-12)


def test_kendall_tau_b_limits_and_undefined_cases():
    x = np.arange(10.0)
    assert kendall_tau_b(x, x ** 3) == 1.0
    assert kendall_tau_b(x, -x) == -1.0
    assert math.isnan(kendall_tau_b(x, np.ones(10)))  # a constant ranking
    assert math.isnan(kendall_tau_b([1.0], [2.0]))
    with pytest.raises(ValueError, match='same length'):
        kendall_tau_b([1.0, 2.0], [1.0])


def test_count_inversions_equals_brute_force():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 31, 64, 100):
        v = rng.integers(0, 6, n)
        brute = sum(int(v[i] > v[j]) for i in range(n) for j in range(i + 1, n))
        assert count_inversions(v) == brute


def test_tau_matrix_is_symmetric_with_pairwise_entries():
    rng = np.random.default_rng(2)
    columns = {k: rng.normal(size=12) for k in 'abc'}
    m = tau_matrix(columns, ['a', 'b', 'c'])
    assert np.array_equal(m, m.T) and np.all(np.diag(m) == 1.0)
    assert m[0, 2] == pytest.approx(naive_tau_b(columns['a'], columns['c']), abs=1e-12)


def test_tau_noise_matches_a_simulation_of_independent_rankings():
    rng = np.random.default_rng(3)
    n = 20
    taus = [kendall_tau_b(rng.permutation(n), np.arange(n)) for _ in range(3000)]
    assert float(np.std(taus)) == pytest.approx(tau_noise(n), rel=0.06)
    assert math.isnan(tau_noise(1))
