import pytest
import torch

from calibseg.calibrators import BinaryTemperatureBiasScaling


def test_recovers_known_temperature_and_bias():
    """z calibrated (y ~ Bernoulli(sigmoid(z))); the model reports (z - b) * T, so (reported / T) + b = z."""
    g = torch.Generator().manual_seed(41)
    z = torch.randn(40000, generator=g) * 3
    y = torch.bernoulli(torch.sigmoid(z), generator=g).long()
    reported = ((z - 0.7) * 2.5).view(40, 1, 10, 100)
    tbs = BinaryTemperatureBiasScaling().fit(reported, y.view(40, 10, 100))
    assert abs(tbs.temperature.item() - 2.5) < 0.1
    assert abs(tbs.bias.item() - 0.7) < 0.06
    assert tbs.fit_info['bce'] < tbs.fit_info['bce_at_identity']
    torch.testing.assert_close(tbs(reported), reported / tbs.temperature.detach() + tbs.bias.detach())


def test_streaming_equals_full_batch_and_state():
    g = torch.Generator().manual_seed(42)
    z = torch.randn(6, 8, 8, generator=g) * 2
    y = torch.bernoulli(torch.sigmoid(z + 1), generator=g).long()
    y[:, :2] = 255
    full = BinaryTemperatureBiasScaling().fit(z, y)

    def batches():
        for i in range(0, 6, 3):
            yield z[i:i + 3], y[i:i + 3]

    stream = BinaryTemperatureBiasScaling().fit(batches)
    assert stream.bias.item() == pytest.approx(full.bias.item(), rel=1e-6)
    assert stream.temperature.item() == pytest.approx(full.temperature.item(), rel=1e-6)
    other = BinaryTemperatureBiasScaling()
    other.load_state_dict(full.state_dict())
    assert other.fitted and 'b=' in other.describe()
