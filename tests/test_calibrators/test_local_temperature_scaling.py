import pytest
import torch
import torch.nn.functional as F

from calibseg.calibrators import LocalTemperatureScaling, TemperatureScaling

K, H, W = 4, 16, 16


def split_miscalibration(n, seed):
    """Calibrated logits u (labels y ~ softmax(u)), reported as u * 3 on the left half of every image
    (over-confident, true T = 3) and u * 0.5 on the right half (under-confident, true T = 0.5)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, K, H, W, generator=g) * 2
    probs = torch.softmax(u, 1).movedim(1, -1).reshape(-1, K)
    y = torch.multinomial(probs, 1, generator=g).view(n, H, W)
    t_true = torch.where(torch.arange(W) < W // 2, 3.0, 0.5).expand(1, 1, H, W)
    return u * t_true, y, t_true


def batches(*tensors, size=8):
    def source():
        for i in range(0, tensors[0].shape[0], size):
            yield tuple(t[i:i + size] for t in tensors)
    return source


def test_initial_calibrator_is_identity():
    lts = LocalTemperatureScaling(num_classes=K)
    z = torch.randn(2, K, 8, 8)
    torch.testing.assert_close(lts.temperature_map(z), torch.ones(2, 1, 8, 8))
    a, b = LocalTemperatureScaling(num_classes=K), LocalTemperatureScaling(num_classes=K, init_seed=1)
    assert torch.equal(a.stem.weight, lts.stem.weight) and not torch.equal(a.stem.weight, b.stem.weight)
    exp = LocalTemperatureScaling(num_classes=K, activation='exp')
    torch.testing.assert_close(exp.temperature_map(z), torch.ones(2, 1, 8, 8))


def test_beats_global_temperature_scaling_on_spatially_varying_miscalibration():
    z, y, t_true = split_miscalibration(32, seed=51)
    z_test, y_test, _ = split_miscalibration(16, seed=52)
    lts = LocalTemperatureScaling(num_classes=K).fit(batches(z, y), epochs=20, lr=1e-2)
    ts = TemperatureScaling(num_classes=K).fit(z, y)
    with torch.no_grad():
        nll_ts = F.cross_entropy(ts(z_test), y_test).item()
        nll_lts = F.cross_entropy(lts(z_test), y_test).item()
        t_map = lts.temperature_map(z_test)
        assert torch.equal(lts(z_test).argmax(1), z_test.argmax(1))  # T(x) > 0 keeps the prediction
    assert nll_lts < nll_ts - 0.03
    assert t_map[..., :W // 2].mean() > 2 * t_map[..., W // 2:].mean()  # hotter where over-confident
    assert lts.fit_info['steps'] == 20 * 4 and lts.fit_info['epoch_nll'][-1] < lts.fit_info['epoch_nll'][0]


def test_image_input_and_ignore():
    z, y, t_true = split_miscalibration(8, seed=53)
    image = torch.where(t_true > 1, 1.0, -1.0).expand(8, 3, H, W).contiguous()  # the cue lies in the image
    y[:, :, :2] = 255
    lts = LocalTemperatureScaling(num_classes=K, use_image=True, hidden_channels=8, dilations=(1,))
    lts.fit(batches(z, y, image, size=4), epochs=3)
    assert lts(z, image).shape == z.shape
    with pytest.raises(ValueError, match='image is required'):
        lts(z)
    with pytest.raises(ValueError, match='does not match'):
        lts(z, image[:, :2])
    one = LocalTemperatureScaling(num_classes=K, use_image=True, hidden_channels=8, dilations=(1,))
    one.fit(z, y, image, epochs=1)  # in-memory form: one minibatch
    assert one.fit_info['steps'] == 1 and one.fit_info['num_pixels'] == int((y != 255).sum())
    # the loss counts labelled pixels only: the first step's loss is the masked NLL at T == 1
    fresh = LocalTemperatureScaling(num_classes=K, hidden_channels=8).fit(z, y, epochs=1)
    assert fresh.fit_info['epoch_nll'][0] == pytest.approx(F.cross_entropy(z, y, ignore_index=255).item(), rel=1e-5)


def test_validation_and_state():
    lts = LocalTemperatureScaling(num_classes=K, hidden_channels=4)
    with pytest.raises(RuntimeError, match='not fitted'):
        lts(torch.zeros(1, K, 4, 4))
    with pytest.raises(ValueError, match='use_image=False'):
        lts.temperature_map(torch.zeros(1, K, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r'\(N, K, H, W\)'):
        lts.fit(torch.zeros(10, K), torch.zeros(10, dtype=torch.long))
    for kwargs, name in [({'activation': 'relu'}, 'activation'), ({'min_temperature': 1.0}, 'min_temperature'),
                         ({'dilations': ()}, 'dilations'), ({'hidden_channels': 0}, 'hidden_channels')]:
        with pytest.raises(ValueError, match=name):
            LocalTemperatureScaling(num_classes=K, **kwargs)
    z, y, _ = split_miscalibration(2, seed=54)
    with pytest.raises(ValueError, match='epochs'):
        lts.fit(z, y, epochs=0)
    lts.fit(z, y, epochs=2)
    other = LocalTemperatureScaling(num_classes=K, hidden_channels=4, init_seed=3)
    other.load_state_dict(lts.state_dict())
    assert other.fitted
    torch.testing.assert_close(other(z), lts(z))
