import pytest
import torch

from calibseg.functional.calibration import sece
from calibseg.functional.calibration.sece import SECE_EXACT_MAX


def naive(c, a, h=0.05):
    k = torch.exp(-0.5 * ((c[:, None] - c[None, :]) / h) ** 2)
    return ((k @ a) / k.sum(1) - c).abs().mean()


def data(n, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    c = (0.3 + 0.7 * torch.rand(n, generator=gen, dtype=torch.float64)).to(dtype)
    a = (torch.rand(n, generator=gen, dtype=torch.float64) < c.double() ** 2).to(dtype)
    return c, a


def test_gradcheck_exact():
    c, a = data(30, 0)
    c.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: sece(c, a, method='exact'), (c,))
    assert torch.autograd.gradcheck(lambda c: sece(c, a, bandwidth=0.2, method='exact'), (c,))


def test_gradcheck_grid_double_precision():
    # the grid path is piecewise smooth (linear interpolation between nodes): check off the nodes
    c, a = data(12, 1)
    c.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: sece(c, a, method='grid'), (c,), eps=1e-9, atol=1e-5)


@pytest.mark.parametrize('n', [50, 1500])
def test_values_and_gradients_agree(n):
    c, a = data(n, 2)
    c.requires_grad_(True)
    ref = naive(c, a)
    (g_ref,) = torch.autograd.grad(ref, c)
    # grid: value within 1e-4, gradient within 1% of its scale (piecewise-linear read-back between nodes)
    for method, tol, gtol in (('exact', 1e-12, 1e-12), ('grid', 1e-4, 1e-2 * float(g_ref.abs().max()))):
        val = sece(c, a, method=method)
        (g,) = torch.autograd.grad(val, c)
        assert val.item() == pytest.approx(ref.item(), abs=tol)
        assert float((g - g_ref).abs().max()) <= gtol


def test_auto_and_float32_and_shapes():
    c, a = data(SECE_EXACT_MAX + 10, 3, dtype=torch.float32)
    c = c.view(2, -1).requires_grad_(True)  # any shape
    val = sece(c, a.bool().view(2, -1))
    val.backward()
    assert c.grad.shape == c.shape and torch.isfinite(c.grad).all()
    assert val.item() == pytest.approx(float(naive(c.detach().double().view(-1), a.double())), abs=1e-4)


def test_errors():
    with pytest.raises(ValueError, match='as many elements'):
        sece(torch.rand(3), torch.ones(4))
    with pytest.raises(ValueError, match='bandwidth'):
        sece(torch.rand(3), torch.ones(3), bandwidth=0)
    with pytest.raises(ValueError, match='method'):
        sece(torch.rand(3), torch.ones(3), method='fft')
    with pytest.raises(ValueError, match='empty'):
        sece(torch.rand(0), torch.ones(0))
    with pytest.raises(ValueError, match='NaN'):
        sece(torch.tensor([0.5, float('nan')]), torch.ones(2))
