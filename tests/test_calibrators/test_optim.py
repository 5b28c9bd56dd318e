import math
import warnings

import pytest
import torch

from calibseg.calibrators import TemperatureScaling
from calibseg.calibrators.optim import lbfgs_fit, newton_inverse_temperature


def quiet_newton(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        return newton_inverse_temperature(*args, **kwargs)


def test_newton_on_quadratic_and_bounds():
    # f(beta) = (beta - 0.25)^2 has its minimiser at T = 4 (one Newton step from any start).
    beta, info = newton_inverse_temperature(lambda b: ((b - 0.25) ** 2, 2 * (b - 0.25), 2.0), t_min=0.01,
                                            t_max=100.0)
    assert beta == pytest.approx(0.25) and info['converged'] and info['passes'] <= 3 and info['at_bound'] is None
    with pytest.warns(RuntimeWarning, match='at or beyond t_max'):
        beta, info = newton_inverse_temperature(lambda b: ((b - 0.25) ** 2, 2 * (b - 0.25), 2.0), t_min=0.5,
                                                t_max=2.0)
    assert beta == pytest.approx(0.5, rel=1e-6)  # T = 4 is outside [0.5, 2]: ends at t_max
    assert info['converged'] and info['at_bound'] == 't_max'
    beta, info = quiet_newton(lambda b: (math.exp(b), math.exp(b), math.exp(b)), t_min=0.1, t_max=10.0)
    assert beta == pytest.approx(0.1, rel=1e-6)  # increasing objective: the smallest beta
    assert info['at_bound'] == 't_max'


def test_newton_brackets_a_far_minimiser():
    """f(b) = exp(-5 b) + c b with the minimiser at b* = 50: plain Newton steps are 1/5 long (250 passes); the
    bracketing step reaches it in a few dozen."""
    c = 5.0 * math.exp(-250.0)

    def stats(b):
        e = math.exp(-5.0 * b)
        return e + c * b, -5.0 * e + c, 25.0 * e

    beta, info = newton_inverse_temperature(stats, t_min=0.001, t_max=100.0, max_iter=100)
    assert info['converged'] and info['at_bound'] is None
    assert beta == pytest.approx(50.0, rel=1e-7)
    assert info['passes'] < 60


def test_newton_warns_when_it_does_not_converge():
    c = 5.0 * math.exp(-250.0)

    def stats(b):
        e = math.exp(-5.0 * b)
        return e + c * b, -5.0 * e + c, 25.0 * e

    with pytest.warns(RuntimeWarning, match='did not converge in 3 passes'):
        _, info = newton_inverse_temperature(stats, t_min=0.001, t_max=100.0, max_iter=3)
    assert not info['converged'] and info['passes'] == 3


def separable(n=20000, k=5, gap=8.0, seed=0):
    """Logits whose top class is always the label, by a margin of about ``gap``: the NLL falls as T -> 0."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    z = torch.randn(n, k, generator=g) * 0.5
    z[torch.arange(n), y] += gap
    return z, y


def test_temperature_scaling_converges_on_separable_data():
    """Issue 17: the Newton fit used all 100 passes and ended unconverged at T = 0.048, warning nobody."""
    z, y = separable()
    with pytest.warns(RuntimeWarning, match='at or beyond t_min'):
        ts = TemperatureScaling(num_classes=5).fit(z, y, ignore_index=None)
    info = ts.fit_info
    assert info['converged'] and info['at_bound'] == 't_min' and info['passes'] < 40
    assert info['temperature'] == pytest.approx(0.01, rel=1e-6)


def test_temperature_scaling_near_separable_matches_a_brute_force_minimum():
    z, y = separable(gap=1.5, seed=1)
    y[:3] = (y[:3] + 1) % 5  # three errors: a finite but small optimal temperature
    ts = TemperatureScaling(num_classes=5).fit(z, y, ignore_index=None)
    assert ts.fit_info['converged'] and ts.fit_info['at_bound'] is None

    def nll(t):
        return float(torch.nn.functional.cross_entropy(z.double() / t, y))

    lo, hi = math.log(0.01), math.log(100.0)  # golden-section search on log T (NLL is unimodal in T)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(200):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if nll(math.exp(a)) < nll(math.exp(b)):
            hi = b
        else:
            lo = a
    reference = math.exp((lo + hi) / 2)
    assert reference < 0.5  # a small temperature indeed
    assert ts.fit_info['temperature'] == pytest.approx(reference, rel=1e-5)
    assert ts.fit_info['nll'] == pytest.approx(nll(reference), rel=1e-9)


def test_lbfgs_fit_mean_loss():
    from calibseg.calibrators.data import PixelPasses, make_stream

    z = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    passes = PixelPasses(make_stream(z, y), num_classes=1, ignore_index=None)
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    info = lbfgs_fit([shift], lambda zz, yy: ((zz[:, 0] - shift) ** 2).sum(), passes)
    assert float(shift.detach()) == pytest.approx(2.0, rel=1e-6)  # the mean minimises the squared error
    assert info['objective'] == pytest.approx(1.0, rel=1e-6)
