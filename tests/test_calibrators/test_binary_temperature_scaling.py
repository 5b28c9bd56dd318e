import pytest
import torch

from calibseg.calibrators import BinaryTemperatureScaling


def binary_data(n, *, seed, shape=None):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, generator=g) * 3
    y = torch.bernoulli(torch.sigmoid(z), generator=g).long()  # calibrated for z
    if shape is not None:
        z, y = z.view(shape), y.view(shape)
    return z, y


def test_recovers_known_temperature():
    z, y = binary_data(40000, seed=31)
    bts = BinaryTemperatureScaling().fit(z * 2.5, y)
    assert abs(bts.temperature.item() - 2.5) < 0.08
    assert bts.fit_info['bce'] < bts.fit_info['bce_at_t1']
    torch.testing.assert_close(bts(z), z / bts.temperature.detach())


@pytest.mark.parametrize('layout', ['n1hw', 'nhw', 'p1'])
def test_shapes_streaming_and_ignore(layout):
    z, y = binary_data(6 * 10 * 10, seed=32, shape=(6, 10, 10))
    y[:, 0, :] = 255
    z[:, 0, :] = 99.0  # ignored garbage
    zin = {'n1hw': z.unsqueeze(1), 'nhw': z, 'p1': z.reshape(-1, 1)}[layout]
    yin = y.reshape(-1) if layout == 'p1' else y
    full = BinaryTemperatureScaling().fit(zin * 0.5, yin)
    keep = y != 255
    flat = BinaryTemperatureScaling().fit(z[keep] * 0.5, y[keep])
    assert full.fit_info['temperature'] == pytest.approx(flat.fit_info['temperature'], rel=1e-12)
    if layout != 'p1':
        def batches():
            for i in range(0, 6, 2):
                yield zin[i:i + 2] * 0.5, y[i:i + 2]
        stream = BinaryTemperatureScaling().fit(batches)
        assert stream.fit_info['temperature'] == pytest.approx(full.fit_info['temperature'], rel=1e-12)
    assert full(zin).shape == zin.shape


def test_invalid_inputs():
    bts = BinaryTemperatureScaling()
    with pytest.raises(RuntimeError, match='not fitted'):
        bts(torch.zeros(3))
    z, y = binary_data(100, seed=33)
    with pytest.raises(ValueError, match=r'outside \[0, 2\)'):
        bts.fit(z, y + 2)
    with pytest.raises(ValueError, match='channels'):
        bts.fit(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='clamp first'):
        bts.fit(torch.logit(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0, 1, 1]))
    bts.fit(z, y)
    with pytest.raises(ValueError, match='channels'):
        bts(torch.zeros(2, 2, 4, 4))
