"""calibseg.apis.export: a folded checkpoint gives the calibrated logits; outputs are written safely."""
from __future__ import annotations

import math

import pytest
import torch
from calibseg_testing import DEMO_CONFIG, POSTHOC_CONFIG, posthoc_options
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from calibseg.apis import export_calibrated_checkpoint, fit_calibrator
from calibseg.apis.export import load_exported_checkpoint, plain_data
from calibseg.calibrators import ClasswiseTemperatureScaling, TemperatureScaling, VectorScaling, load_calibrator


def fitted_file(tmp_path, tiny_voc, checkpoint, method, **options):
    out = str(tmp_path / f'{method}.pth')
    fit_calibrator(config=POSTHOC_CONFIG.format(method), checkpoint=checkpoint, out=out,
                   cfg_options=posthoc_options(tiny_voc), max_pixels_per_image=200, **options)
    return out


@pytest.mark.parametrize('method,cls', [('ts', TemperatureScaling), ('cts', ClasswiseTemperatureScaling),
                                        ('vs', VectorScaling)])
def test_exported_checkpoint_gives_the_calibrated_logits(tiny_voc, checkpoint, tmp_path, method, cls):
    options = {} if method == 'ts' else {'calibrator_cfg': {'max_iter': 20}}
    calibrator_file = fitted_file(tmp_path, tiny_voc, checkpoint, method, **options)
    exported = str(tmp_path / 'exported.pth')
    export_calibrated_checkpoint(DEMO_CONFIG, checkpoint, calibrator_file, exported)
    payload = load_exported_checkpoint(exported)  # plain data only: torch's safe loader
    assert payload['meta']['calibseg_export']['calibrator'] == cls.__name__
    assert payload['meta']['iter'] == 2 and payload['meta']['dataset_meta']['classes'][3] == 'c3'

    init_default_scope('mmseg')
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    plain.load_state_dict(payload['state_dict'])
    cfg = Config.fromfile(POSTHOC_CONFIG.format(method))
    cfg.model.calibrator.file = calibrator_file
    calibrated = MODELS.build(cfg.model)
    calibrated.load_state_dict(torch.load(checkpoint, weights_only=False)['state_dict'])
    plain.eval()
    calibrated.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = calibrated(x, mode='tensor')
        got = plain(x, mode='tensor')
    assert expected.std() > 0.3  # not trivially small logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_lts_cannot_be_exported(tiny_voc, checkpoint, tmp_path):
    calibrator_file = fitted_file(tmp_path, tiny_voc, checkpoint, 'lts', fit_cfg={'epochs': 1})
    with pytest.raises(ValueError, match='cannot be folded into the classifier convolution'):
        export_calibrated_checkpoint(DEMO_CONFIG, checkpoint, calibrator_file, str(tmp_path / 'x.pth'))
    assert not (tmp_path / 'x.pth').exists()
    assert math.isfinite(load_calibrator(calibrator_file).meta['fit_metrics']['after']['NLL'])


def test_export_never_overwrites_its_inputs(tiny_voc, checkpoint, tmp_path):
    """Issue 17: --out equal to the input checkpoint overwrote the source checkpoint."""
    calibrator_file = fitted_file(tmp_path, tiny_voc, checkpoint, 'ts')
    original = open(checkpoint, 'rb').read()
    for target in (checkpoint, calibrator_file):
        with pytest.raises(ValueError, match='is an input of this command'):
            export_calibrated_checkpoint(DEMO_CONFIG, checkpoint, calibrator_file, target, force=True)
    assert open(checkpoint, 'rb').read() == original
    out = tmp_path / 'exported.pth'
    out.write_bytes(b'older export')
    with pytest.raises(FileExistsError, match='without --force'):
        export_calibrated_checkpoint(DEMO_CONFIG, checkpoint, calibrator_file, str(out))
    assert out.read_bytes() == b'older export'
    export_calibrated_checkpoint(DEMO_CONFIG, checkpoint, calibrator_file, str(out), force=True)
    assert load_exported_checkpoint(str(out))['meta']['calibseg_export']['calibrator'] == 'TemperatureScaling'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['exported.pth', 'ts.pth']  # no temporary files


def test_plain_data_drops_objects():
    assert plain_data({'a': (1, object()), 'b': {'c': object()}, 3: None}) == {'a': (1,), 'b': {}, 3: None}
