import pytest
import torch
from torch import nn

from calibseg.calibrators import (
    CALIBRATORS,
    BinaryTemperatureBiasScaling,
    BinaryTemperatureScaling,
    CalibratorFileError,
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


def test_save_is_atomic_and_refuses_to_overwrite(tmp_path, synth, monkeypatch):
    calibrator, _ = fitted('TemperatureScaling', synth)
    path = tmp_path / 'ts.pth'
    save_calibrator(path, calibrator)
    with pytest.raises(FileExistsError, match='refusing to overwrite'):
        save_calibrator(path, calibrator, overwrite=False)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):  # the disk fills up half-way through the write
        f.write(b'PK\x03\x04 partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(OSError, match='No space left'):
        save_calibrator(path, calibrator, {'run': 2})
    monkeypatch.undo()
    assert path.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ts.pth']  # no temporary file left behind
    assert load_calibrator(path).temperature.item() == calibrator.temperature.item()


def edited(tmp_path, synth, kind='TemperatureScaling', **changes):
    calibrator, _ = fitted(kind, synth)
    path = tmp_path / 'good.pth'
    save_calibrator(path, calibrator)
    payload = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del payload[key]
        elif callable(value):
            value(payload)
        else:
            payload[key] = value
    bad = tmp_path / 'edited.pth'
    torch.save(payload, bad)
    return bad


@pytest.mark.parametrize('key', ['method', 'num_classes', 'config', 'state_dict'])
def test_missing_keys_name_the_key(tmp_path, synth, key):
    """Issue 17: a hand-edited file without ``method`` gave a bare KeyError."""
    with pytest.raises(CalibratorFileError, match=rf"missing required key\(s\) \['{key}'\]"):
        load_calibrator(edited(tmp_path, synth, **{key: None}))


def test_header_class_count_must_match_the_stored_calibrator(tmp_path, synth):
    """Issue 17: a header class count that disagreed with the calibrator passed."""
    with pytest.raises(CalibratorFileError, match='header says num_classes=21'):
        load_calibrator(edited(tmp_path, synth, num_classes=21), expected_num_classes=21)
    with pytest.raises(CalibratorFileError, match='do not match'):  # tensors of another class count
        load_calibrator(edited(tmp_path, synth, 'VectorScaling',
                               config=lambda p: p['config'].update(num_classes=4), num_classes=4))


@pytest.mark.parametrize('value,match', [(float('nan'), 'NaN or infinite'), (float('inf'), 'NaN or infinite'),
                                         (30.0, 'outside the fitted range'), (-30.0, 'outside the fitted range')])
def test_non_finite_or_absurd_parameters_are_refused(tmp_path, synth, value, match):
    """Issue 17: NaN or absurd parameters loaded."""
    for method in ('TemperatureScaling', 'ClasswiseTemperatureScaling', 'BinaryTemperatureScaling'):
        def corrupt_k(payload, method=method):
            shape = payload['state_dict']['log_temperature'].shape
            payload['state_dict']['log_temperature'] = torch.full(shape, value)

        with pytest.raises(CalibratorFileError, match=match):
            load_calibrator(edited(tmp_path, synth, method, state_dict=corrupt_k))
    with pytest.raises(CalibratorFileError, match='NaN or infinite'):
        load_calibrator(edited(tmp_path, synth, 'VectorScaling',
                               state_dict=lambda p: p['state_dict']['bias'].fill_(float('nan'))))


def test_unfitted_and_bad_config_files(tmp_path, synth):
    with pytest.raises(CalibratorFileError, match='unfitted'):
        load_calibrator(edited(tmp_path, synth, state_dict=lambda p: p['state_dict']['is_fitted'].fill_(False)))
    with pytest.raises(CalibratorFileError, match='invalid stored configuration'):
        load_calibrator(edited(tmp_path, synth, config=lambda p: p['config'].update(t_min=-1.0)))
    with pytest.raises(CalibratorFileError, match='num_classes must be a positive int'):
        load_calibrator(edited(tmp_path, synth, num_classes='3'))


def test_edited_values_fail_the_checksum(tmp_path, synth):
    def warmer(payload):
        payload['state_dict']['log_temperature'] = payload['state_dict']['log_temperature'] + 0.1  # still in range

    with pytest.raises(CalibratorFileError, match='does not match its checksum'):
        load_calibrator(edited(tmp_path, synth, state_dict=warmer))
    with pytest.raises(CalibratorFileError, match='no checksum'):
        load_calibrator(edited(tmp_path, synth, checksum=None))
    with pytest.raises(CalibratorFileError, match='checksum mismatch'):
        load_calibrator(edited(tmp_path, synth, meta={'split': 'train'}))
