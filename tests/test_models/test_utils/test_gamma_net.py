"""GammaNet: a bounded, positive γ that starts at init_gamma; its options are checked."""
import pytest
import torch

from calibseg.models.utils import GammaNet


def _randomise(gamma_net: GammaNet, seed: int = 1) -> None:
    """Random weights everywhere (the zero-initialised last layer would give zero first-layer gradients)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in gamma_net.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.5)


@pytest.mark.parametrize('per, shape', [('pixel', (2, 1, 5, 7)), ('image', (2, 1, 1, 1))])
def test_gamma_is_bounded_positive_and_starts_at_init_gamma(per, shape):
    net = GammaNet(6, per=per, hidden=5, gamma_max=5.0, init_gamma=3.0)
    features = torch.randn(2, 6, 5, 7) * 10
    gamma = net(features)
    assert gamma.shape == shape
    torch.testing.assert_close(gamma, torch.full(shape, 3.0))  # zero last layer: the constant init_gamma
    _randomise(net)
    with torch.no_grad():
        gamma = net(torch.randn(2, 6, 5, 7, generator=torch.Generator().manual_seed(0)) * 3)
        assert float(gamma.min()) > 0 and float(gamma.max()) < 5.0
        assert float(gamma.max() - gamma.min()) > (1.0 if per == 'pixel' else 0.0)
        # γ = gamma_max * sigmoid: at extreme features it saturates at the bounds in floating point, never beyond
        extreme = net(torch.randn(2, 6, 5, 7) * 1e4)
        assert float(extreme.min()) >= 0 and float(extreme.max()) <= 5.0


@pytest.mark.parametrize('options, match', [
    (dict(per='region'), 'per'), (dict(hidden=0), 'hidden'), (dict(gamma_max=0.0), 'gamma_max'),
    (dict(init_gamma=5.0), 'init_gamma'), (dict(init_gamma=-1.0), 'init_gamma')])
def test_gamma_net_options_are_checked(options, match):
    with pytest.raises(ValueError, match=match):
        GammaNet(4, **options)


def test_gamma_net_rejects_features_of_another_width():
    with pytest.raises(ValueError, match=r'GammaNet expects \(N, 4, h, w\) features, got \(2, 3, 5, 5\)'):
        GammaNet(4)(torch.zeros(2, 3, 5, 5))
