"""Mixup draws from an owned generator: Beta(a, a) samples, permutations, mixed images."""
import numpy as np
import pytest
import torch
from scipy import stats

from calibseg.functional.mixup import draw_mixup, mix_images, sample_beta


@pytest.mark.parametrize('alpha', [0.2, 1.0, 2.0, 7.5])
def test_sample_beta_follows_beta_distribution(alpha):
    g = torch.Generator().manual_seed(0)
    draws = np.array([sample_beta(alpha, g) for _ in range(3000)])
    assert ((draws >= 0) & (draws <= 1)).all()
    # Kolmogorov-Smirnov against scipy's Beta(a, a) (fixed seed: deterministic)
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    assert draws.mean() == pytest.approx(0.5, abs=0.03)
    assert draws.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.1)


def test_sample_beta_small_shape_stays_finite():
    g = torch.Generator().manual_seed(1)
    draws = [sample_beta(0.01, g) for _ in range(200)]  # Gamma(0.01) variates underflow to 0 in linear space
    assert all(0.0 <= d <= 1.0 and np.isfinite(d) for d in draws)
    assert min(draws) < 1e-3 and max(draws) > 1 - 1e-3  # mass at both ends


def test_draws_are_reproducible_from_the_generator_only():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.rand(10)  # the global RNG plays no part
    a, b = draw_mixup(6, 3, 2.0, g1), draw_mixup(6, 3, 2.0, g2)
    assert torch.equal(a.lams, b.lams) and torch.equal(a.permutations, b.permutations)
    c = draw_mixup(6, 3, 2.0, g1)  # the generator moved on
    assert not torch.equal(a.lams, c.lams)
    assert a.lams.shape == (3,) and a.lams.dtype == torch.float64
    assert a.permutations.shape == (3, 6)
    for row in a.permutations:
        assert sorted(row.tolist()) == list(range(6))
    assert len(set(a.lams.tolist())) == 3  # one lambda per draw


def test_mix_images_is_lambda_x_plus_one_minus_lambda_partner():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 5, 5, generator=g)
    draw = draw_mixup(4, 2, 1.0, g)
    mixed = mix_images(x, draw)
    assert mixed.shape == (8, 3, 5, 5)
    for t in range(2):
        lam = float(draw.lams[t])
        for b in range(4):
            partner = int(draw.permutations[t, b])
            torch.testing.assert_close(mixed[t * 4 + b], lam * x[b] + (1 - lam) * x[partner])


@pytest.mark.parametrize('alpha', [0, -1.0, float('inf'), float('nan'), True, '2'])
def test_bad_alpha(alpha):
    g = torch.Generator()
    with pytest.raises(ValueError, match='must be a finite number > 0'):
        sample_beta(alpha, g)
    with pytest.raises(ValueError, match='must be a finite number > 0'):
        draw_mixup(2, 1, alpha, g)


def test_bad_draw_arguments():
    g = torch.Generator()
    with pytest.raises(ValueError, match='num_mixups'):
        draw_mixup(2, 0, 1.0, g)
    with pytest.raises(ValueError, match='batch_size'):
        draw_mixup(0, 1, 1.0, g)
    draw = draw_mixup(3, 1, 1.0, g)
    with pytest.raises(ValueError, match='pairs batches'):
        mix_images(torch.zeros(2, 3, 4, 4), draw)
    with pytest.raises(TypeError, match='floating-point'):
        mix_images(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), draw)
