import pytest
import torch

from calibseg.calibrators import ClasswiseTemperatureScaling

T_TRUE = torch.tensor([0.5, 1.0, 2.0, 3.0])


def test_recovers_per_class_temperatures(synth):
    """Identifiable generative setup: calibrated logits u with i.i.d. continuous entries per class, labels
    y ~ Categorical(softmax(u)), reported logits z_k = T_k u_k. softmax(z / T') = softmax(u) at every pixel needs
    u_k (T_k / T'_k - 1) to be the same for all k, which for continuous independent u_k forces T' = T; so the
    population NLL has its unique minimum at T and the fit converges to it as the pixel count grows."""
    u, y = synth.calibrated_pixels(30000, 4, scale=2.0, seed=11)
    cts = ClasswiseTemperatureScaling(num_classes=4).fit(u * T_TRUE, y, ignore_index=None)
    torch.testing.assert_close(cts.temperature.detach(), T_TRUE, rtol=0.05, atol=0.0)
    assert cts.fit_info['nll'] < cts.fit_info['nll_at_t1']
    assert cts.fit_info['absent_classes'] == []
    z = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(cts(z), z / cts.temperature.detach().view(1, 4, 1, 1))


def test_streaming_equals_full_batch(synth):
    u, y = synth.calibrated_maps(6, 4, 10, 10, scale=2.0, seed=12, ignore_frac=0.2)
    z = u * T_TRUE.view(1, 4, 1, 1)
    full = ClasswiseTemperatureScaling(num_classes=4).fit(z, y)
    stream = ClasswiseTemperatureScaling(num_classes=4).fit(synth.batches_of(z, y, size=2))
    torch.testing.assert_close(stream.temperature, full.temperature, rtol=1e-6, atol=0.0)


def test_ignored_pixels_have_no_effect(synth):
    u, y = synth.calibrated_maps(4, 4, 8, 8, seed=13, ignore_frac=0.3)
    noisy = u.clone()
    noisy.movedim(1, -1)[y == synth.IGNORE] = -40.0
    keep = y != synth.IGNORE
    a = ClasswiseTemperatureScaling(num_classes=4).fit(noisy, y)
    b = ClasswiseTemperatureScaling(num_classes=4).fit(u.movedim(1, -1)[keep], y[keep])
    torch.testing.assert_close(a.temperature, b.temperature, rtol=1e-9, atol=0.0)


def test_absent_class_warns(synth):
    u, y = synth.calibrated_pixels(2000, 3, seed=14)
    y[y == 2] = 0
    with pytest.warns(UserWarning, match=r'classes \[2\]'):
        cts = ClasswiseTemperatureScaling(num_classes=3, max_iter=20).fit(u, y)
    assert cts.fit_info['absent_classes'] == [2]
    assert 0.01 <= cts.temperature.min().item() and cts.temperature.max().item() <= 100.0


def test_validation_and_state(synth):
    cts = ClasswiseTemperatureScaling(num_classes=3)
    with pytest.raises(RuntimeError, match='not fitted'):
        cts(torch.zeros(1, 3))
    with pytest.raises(ValueError, match='tolerance_grad'):
        ClasswiseTemperatureScaling(num_classes=3, tolerance_grad=0)
    u, y = synth.calibrated_pixels(500, 3, seed=15)
    cts.fit(u, y)
    with pytest.raises(ValueError, match='num_classes=3'):
        cts(torch.zeros(1, 2, 4, 4))
    other = ClasswiseTemperatureScaling(num_classes=3)
    other.load_state_dict(cts.state_dict())
    assert other.fitted and torch.equal(other.temperature, cts.temperature)
    assert 'T=[' in repr(other)
