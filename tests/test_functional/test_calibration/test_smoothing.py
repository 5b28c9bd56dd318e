import math

import pytest
import torch

from calibseg.functional.calibration.smoothing import (
    deposit,
    interpolate,
    node_count,
    smooth_plain,
    smooth_reflected,
    trapezoid,
)


def test_node_count():
    assert node_count(0.05) == 2049
    assert node_count(0.001) == 32769
    assert node_count(1e-9) == 2**18 + 1
    assert node_count(0.05, per_bandwidth=100) == 2049


def test_deposit_keeps_mass_and_mean():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(100, generator=gen, dtype=torch.float64), torch.tensor([0.0, 1.0])])
    w = torch.rand(2, 102, generator=gen, dtype=torch.float64)
    nodes = deposit(x, w, 33)
    t = torch.linspace(0, 1, 33, dtype=torch.float64)
    torch.testing.assert_close(nodes.sum(1), w.sum(1))
    torch.testing.assert_close(nodes @ t, w @ x)
    torch.testing.assert_close(interpolate(t.expand(2, 33), x), x.expand(2, 102))


@pytest.mark.parametrize('x0', [0.0, 0.013, 0.5, 0.9991, 1.0])
@pytest.mark.parametrize('h', [0.02, 0.3])
def test_reflected_gaussian_is_a_density_on_the_interval(x0, h):
    e = node_count(h)
    dens = smooth_reflected(deposit(torch.tensor([x0], dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                                    e), h)
    assert float(trapezoid(dens)) == pytest.approx(1.0, abs=1e-6)
    t = torch.linspace(0, 1, e, dtype=torch.float64)
    want = sum(torch.exp(-0.5 * ((t - img) / h) ** 2) for m in range(-3, 4) for img in (x0 + 2 * m, -x0 + 2 * m))
    want = want / (h * math.sqrt(2 * math.pi))
    torch.testing.assert_close(dens, want, rtol=2e-3, atol=1e-6 / h)


def test_plain_gaussian_matches_direct_sum():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(50, generator=gen, dtype=torch.float64)
    e = node_count(0.05, per_bandwidth=100)
    sm = interpolate(smooth_plain(deposit(x, torch.ones_like(x), e), 0.05), x)
    direct = torch.exp(-0.5 * ((x[:, None] - x[None, :]) / 0.05) ** 2).sum(1)
    torch.testing.assert_close(sm, direct, rtol=1e-4, atol=1e-6)
    dens = smooth_plain(deposit(torch.tensor([0.5], dtype=torch.float64), torch.ones(1, dtype=torch.float64), e),
                        0.05, normalized=True)
    assert float(trapezoid(dens)) == pytest.approx(1.0, abs=1e-6)
