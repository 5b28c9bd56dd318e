import pytest
import torch
from torch import nn

from calibseg.calibrators import (
    CALIBRATORS,
    BinaryTemperatureBiasScaling,
    BinaryTemperatureScaling,
    ClasswiseTemperatureScaling,
    LocalTemperatureScaling,
    TemperatureScaling,
    VectorScaling,
    build_calibrator,
    fold_temperature_into_conv,
    load_calibrator,
    save_calibrator,
)


def fitted(method, synth):
    if method.startswith('Binary'):
        g = torch.Generator().manual_seed(61)
        z = torch.randn(2, 1, 6, 6, generator=g) * 3
        y = torch.bernoulli(torch.sigmoid(z.squeeze(1) / 2 + 0.3), generator=g).long()
        return CALIBRATORS[method]().fit(z, y), z
    u, y = synth.calibrated_maps(2, 3, 6, 6, seed=62)
    z = u * torch.tensor([2.0, 1.0, 0.5]).view(1, 3, 1, 1)
    if method == 'LocalTemperatureScaling':
        return LocalTemperatureScaling(num_classes=3, hidden_channels=4).fit(z, y, epochs=2), z
    return CALIBRATORS[method](num_classes=3).fit(z, y), z


@pytest.mark.parametrize('method', sorted(CALIBRATORS))
def test_round_trip(method, tmp_path, synth):
    calibrator, z = fitted(method, synth)
    path = tmp_path / 'calibrator.pth'
    meta = {'config': 'fcn.py', 'checkpoint': 'iter_400.pth', 'images': 5, 'classes': ['a', 'b'], 'x': None}
    save_calibrator(path, calibrator, meta)
    loaded = load_calibrator(path, expected_method=method, expected_num_classes=calibrator.num_classes)
    assert type(loaded) is type(calibrator) and loaded.fitted and loaded.meta == meta
    assert loaded.get_config() == calibrator.get_config()
    with torch.no_grad():
        torch.testing.assert_close(loaded(z), calibrator(z), rtol=0, atol=0)
    payload = torch.load(path, weights_only=True)
    assert payload['method'] == method and payload['num_classes'] == calibrator.num_classes
    assert set(payload) >= {'method', 'num_classes', 'state_dict', 'meta', 'config'}


def test_mismatches_and_bad_files(tmp_path, synth):
    calibrator, _ = fitted('TemperatureScaling', synth)
    path = tmp_path / 'ts.pth'
    save_calibrator(path, calibrator)
    with pytest.raises(ValueError, match="expected_method='VectorScaling'"):
        load_calibrator(path, expected_method='VectorScaling')
    with pytest.raises(ValueError, match='expected_num_classes=21'):
        load_calibrator(path, expected_num_classes=21)
    with pytest.raises(ValueError, match='not fitted'):
        save_calibrator(path, TemperatureScaling(num_classes=3))
    with pytest.raises(ValueError, match='meta'):
        save_calibrator(path, calibrator, {'model': nn.Linear(1, 1)})
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {}}, other)
    with pytest.raises(ValueError, match='not a calibseg calibrator file'):
        load_calibrator(other)
    payload = torch.load(path, weights_only=True)
    payload['method'] = 'DirichletScaling'
    torch.save(payload, other)
    with pytest.raises(ValueError, match='unknown calibrator method'):
        load_calibrator(other)


def test_build_calibrator():
    ts = build_calibrator('TemperatureScaling', {'num_classes': 21, 'method': 'grid'})
    assert isinstance(ts, TemperatureScaling) and ts.fit_method == 'grid' and not ts.fitted
    with pytest.raises(ValueError, match='method must be one of'):
        build_calibrator('Platt', {})
    with pytest.raises(ValueError, match='invalid config for VectorScaling'):
        build_calibrator('VectorScaling', {'num_classes': 3, 'lr': 0.1})


@pytest.mark.parametrize('method', ['TemperatureScaling', 'ClasswiseTemperatureScaling', 'VectorScaling',
                                    'BinaryTemperatureScaling', 'BinaryTemperatureBiasScaling'])
@pytest.mark.parametrize('bias', [True, False])
def test_folded_conv_equals_calibrated_conv(method, bias, synth):
    calibrator, _ = fitted(method, synth)
    g = torch.Generator().manual_seed(63)
    conv = nn.Conv2d(8, calibrator.num_classes, 1, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        if bias:
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    x = torch.randn(2, 8, 5, 5, generator=g)
    folded = fold_temperature_into_conv(conv, calibrator)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), calibrator(conv(x)), rtol=1e-5, atol=1e-5)
        assert folded is not conv and torch.equal(conv(x), conv(x))  # the original is untouched


def test_fold_rejects(synth):
    lts, _ = fitted('LocalTemperatureScaling', synth)
    with pytest.raises(ValueError, match='cannot be folded'):
        fold_temperature_into_conv(nn.Conv2d(4, 3, 1), lts)
    ts, _ = fitted('TemperatureScaling', synth)
    with pytest.raises(ValueError, match='out_channels=5'):
        fold_temperature_into_conv(nn.Conv2d(4, 5, 1), ts)
    with pytest.raises(ValueError, match='not fitted'):
        fold_temperature_into_conv(nn.Conv2d(4, 3, 1), ClasswiseTemperatureScaling(num_classes=3))
    with pytest.raises(ValueError, match='Conv2d'):
        fold_temperature_into_conv(nn.Linear(4, 3), ts)
    assert {VectorScaling, BinaryTemperatureScaling, BinaryTemperatureBiasScaling} <= set(CALIBRATORS.values())
