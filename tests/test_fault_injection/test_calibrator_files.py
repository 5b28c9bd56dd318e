"""Fault injection on the files of post-hoc calibration: truncated calibrators and exported checkpoints, a crash
while writing. Every damaged file gives a clear error when read back, never a wrong value."""
from __future__ import annotations

import pytest
import torch

from calibseg.calibrators import (
    CALIBRATORS,
    CalibratorFileError,
    ClasswiseTemperatureScaling,
    LocalTemperatureScaling,
    TemperatureScaling,
    VectorScaling,
    load_calibrator,
    save_calibrator,
)


def fitted(method):
    g = torch.Generator().manual_seed(1)
    if method.startswith('Binary'):
        z = torch.randn(2, 1, 6, 6, generator=g) * 3
        y = torch.bernoulli(torch.sigmoid(z.squeeze(1) / 2), generator=g).long()
        return CALIBRATORS[method]().fit(z, y)
    z = torch.randn(2, 3, 6, 6, generator=g) * 3
    y = torch.randint(0, 3, (2, 6, 6), generator=g)
    if method == 'LocalTemperatureScaling':
        return LocalTemperatureScaling(num_classes=3, hidden_channels=4).fit(z, y, epochs=1)
    return CALIBRATORS[method](num_classes=3).fit(z, y)


def cuts(size):
    """Truncation lengths: the empty file, every 1/16 of it, and one byte short."""
    return sorted({0, 1, size - 1, *(size * i // 16 for i in range(1, 16))})


@pytest.mark.parametrize('method', sorted(CALIBRATORS))
def test_truncated_calibrator_files_never_load(tmp_path, method):
    path = tmp_path / 'calibrator.pth'
    save_calibrator(path, fitted(method), {'split': 'val'})
    data = path.read_bytes()
    for length in cuts(len(data)):
        damaged = tmp_path / f'cut{length}.pth'
        damaged.write_bytes(data[:length])
        with pytest.raises(CalibratorFileError, match=f'cut{length}.pth: not a readable calibseg calibrator'):
            load_calibrator(damaged)
    assert load_calibrator(path).meta == {'split': 'val'}  # the intact file still loads


@pytest.mark.parametrize('cls', [TemperatureScaling, ClasswiseTemperatureScaling, VectorScaling])
def test_flipped_bytes_give_an_error_or_the_same_values(tmp_path, cls):
    """A flipped byte anywhere in the file: either it is refused (the zip container, the pickle, or the content
    checksum catches it), or what loads is exactly what was saved (a byte outside the content, e.g. padding)."""
    calibrator = fitted(cls.__name__)
    path = tmp_path / 'c.pth'
    save_calibrator(path, calibrator, {'split': 'val', 'images': 5})
    data = path.read_bytes()
    reference = {k: v.clone() for k, v in calibrator.state_dict().items()}
    refused = 0
    for position in range(0, len(data), max(1, len(data) // 200)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        bad = tmp_path / 'bad.pth'
        bad.write_bytes(bytes(damaged))
        try:
            loaded = load_calibrator(bad)
        except CalibratorFileError:
            refused += 1
            continue
        state = loaded.state_dict()
        assert all(torch.equal(state[k], v) for k, v in reference.items()), f'byte {position}: a wrong value'
        assert loaded.meta == {'split': 'val', 'images': 5}
    assert refused > 0


def test_truncated_exported_checkpoint_never_loads(tmp_path):
    """An exported checkpoint is written by the same atomic writer; a truncated copy is refused by the reader."""
    from calibseg.apis.export import load_exported_checkpoint
    from calibseg.calibrators.io import atomic_torch_save

    payload = {'meta': {'calibseg_export': {'calibrator': 'TemperatureScaling'}},
               'state_dict': {'decode_head.conv_seg.weight': torch.randn(21, 16, 1, 1),
                              'decode_head.conv_seg.bias': torch.randn(21)}}
    path = tmp_path / 'exported.pth'
    atomic_torch_save(payload, path)
    assert torch.equal(load_exported_checkpoint(str(path))['state_dict']['decode_head.conv_seg.bias'],
                       payload['state_dict']['decode_head.conv_seg.bias'])
    data = path.read_bytes()
    for length in cuts(len(data)):
        damaged = tmp_path / 'cut.pth'
        damaged.write_bytes(data[:length])
        with pytest.raises(ValueError, match='not a readable exported checkpoint'):
            load_exported_checkpoint(str(damaged))
    nan = dict(payload, state_dict={'w': torch.tensor([float('nan')])})
    torch.save(nan, tmp_path / 'nan.pth')
    with pytest.raises(ValueError, match='NaN or infinite'):
        load_exported_checkpoint(str(tmp_path / 'nan.pth'))


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'ts.pth'
    first = fitted('TemperatureScaling')
    save_calibrator(path, first)

    def killed(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04')  # a few bytes of the new file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, 'save', killed)
    with pytest.raises(KeyboardInterrupt):
        save_calibrator(path, fitted('TemperatureScaling'))
    monkeypatch.undo()
    assert load_calibrator(path).temperature.item() == first.temperature.item()
    assert [p.name for p in tmp_path.iterdir()] == ['ts.pth']
