import pytest
import torch

from calibseg.calibrators import VectorScaling

W_TRUE = torch.tensor([0.5, 2.0, 1.0, 3.0])
B_TRUE = torch.tensor([1.0, -0.5, 0.0, 0.3])


def test_recovers_diagonal_scaling_and_bias(synth):
    """u calibrated (y ~ softmax(u)); the model reports z = (u - b) / w, so w z + b = u. The bias is identifiable up
    to a constant shift (softmax is shift-invariant): compare centred biases."""
    u, y = synth.calibrated_pixels(30000, 4, scale=2.0, seed=21)
    vs = VectorScaling(num_classes=4).fit((u - B_TRUE) / W_TRUE, y, ignore_index=None)
    torch.testing.assert_close(vs.weight.detach(), W_TRUE, rtol=0.05, atol=0.0)
    torch.testing.assert_close(vs.bias.detach(), B_TRUE - B_TRUE.mean(), rtol=0.0, atol=0.06)
    assert abs(vs.bias.sum().item()) < 1e-5
    assert vs.fit_info['nll'] < vs.fit_info['nll_at_identity']


def test_streaming_equals_full_batch(synth):
    u, y = synth.calibrated_maps(6, 4, 10, 10, scale=2.0, seed=22, ignore_frac=0.2)
    z = (u - B_TRUE.view(1, 4, 1, 1)) / W_TRUE.view(1, 4, 1, 1)
    full = VectorScaling(num_classes=4).fit(z, y)
    stream = VectorScaling(num_classes=4).fit(synth.batches_of(z, y, size=2))
    torch.testing.assert_close(stream.weight, full.weight, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(stream.bias, full.bias, rtol=1e-6, atol=1e-6)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(full(x), x * full.weight.detach().view(1, 4, 1, 1)
                               + full.bias.detach().view(1, 4, 1, 1))


def test_validation_and_state(synth):
    vs = VectorScaling(num_classes=3)
    with pytest.raises(RuntimeError, match='not fitted'):
        vs(torch.zeros(1, 3))
    u, y = synth.calibrated_pixels(500, 3, seed=23)
    with pytest.raises(ValueError, match='num_classes=3'):
        vs.fit(u[:, :2], y)
    vs.fit(u, y)
    other = VectorScaling(num_classes=3)
    other.load_state_dict(vs.state_dict())
    assert other.fitted and torch.equal(other.weight, vs.weight) and 'w=[' in other.describe()
