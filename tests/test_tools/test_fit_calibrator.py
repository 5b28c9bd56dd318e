"""The post-hoc command lines: tools/fit_calibrator.py, tools/export_calibrated_checkpoint.py, tools/posthoc_demo.py.

The library behind them is tested in tests/test_apis/; here the command lines run as a user runs them."""
from __future__ import annotations

import os.path as osp
import subprocess
import sys

import pytest
import torch
from calibseg_testing import DEMO_CONFIG, POSTHOC_CONFIG, ROOT, as_cli_options, posthoc_options

from calibseg.apis import fit_calibrator
from calibseg.calibrators import load_calibrator

TOOLS = osp.join(ROOT, 'tools')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A checkpoint of the demo FCN (random weights), saved like a Runner's."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import calibseg  # noqa: F401

    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    model.init_weights()
    with torch.no_grad():
        model.decode_head.conv_seg.weight.mul_(30.0)
    path = tmp_path_factory.mktemp('ckpt') / 'iter_2.pth'
    torch.save({'meta': {'iter': 2}, 'state_dict': model.state_dict()}, path)
    return str(path)


def run(args, cwd, ok=True):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    log = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, log[-4000:]
    return log


def test_fit_then_test_the_calibrated_config(tiny_voc, checkpoint, tmp_path):
    options = as_cli_options(posthoc_options(tiny_voc))
    out = tmp_path / 'ts.pth'
    fit = [osp.join(TOOLS, 'fit_calibrator.py'), POSTHOC_CONFIG.format('ts'), checkpoint, '--out', str(out),
           '--log-every', '2', '--cfg-options', *options]
    log = run(fit, cwd=str(tmp_path))
    assert 'TemperatureScaling fitted' in log and 'T=' in log and 'before' in log and 'after' in log
    assert '[fit_calibrator] inference: 2/5 images' in log and f'wrote {out}' in log
    cal = load_calibrator(out, expected_method='TemperatureScaling', expected_num_classes=21)
    assert cal.meta['split'] == 'calib_dataloader' and cal.meta['num_images'] == 5
    assert 'fit_calibrator.py' in cal.meta['command'] and '--log-every' in cal.meta['command']
    before, after = cal.meta['fit_metrics']['before'], cal.meta['fit_metrics']['after']
    assert after['NLL'] <= before['NLL'] + 1e-9  # the NLL optimum on the fitted pixels
    first = out.read_bytes()
    log = run(fit, cwd=str(tmp_path), ok=False)  # issue 17: an existing output is refused without --force
    assert 'refusing to overwrite it without --force' in log and out.read_bytes() == first
    log = run([osp.join(TOOLS, 'test.py'), POSTHOC_CONFIG.format('ts'), checkpoint, '--work-dir',
               str(tmp_path / 'test'), '--cfg-options', *options, f'model.calibrator.file={out}'],
              cwd=str(tmp_path))
    assert 'mIoU:' in log and 'ECE:' in log and 'NLL:' in log


def test_outputs_never_overwrite_the_inputs(tiny_voc, checkpoint, tmp_path):
    options = as_cli_options(posthoc_options(tiny_voc))
    original = open(checkpoint, 'rb').read()
    log = run([osp.join(TOOLS, 'fit_calibrator.py'), POSTHOC_CONFIG.format('ts'), checkpoint, '--out', checkpoint,
               '--force', '--cfg-options', *options], cwd=str(tmp_path), ok=False)
    assert 'is an input of this command' in log
    calibrator = tmp_path / 'ts.pth'
    fit_calibrator(config=POSTHOC_CONFIG.format('ts'), checkpoint=checkpoint, out=str(calibrator),
                   max_pixels_per_image=100, cfg_options=posthoc_options(tiny_voc))
    export = [osp.join(TOOLS, 'export_calibrated_checkpoint.py'), DEMO_CONFIG, checkpoint, str(calibrator)]
    log = run(export + [checkpoint, '--force'], cwd=str(tmp_path), ok=False)  # issue 17: it overwrote it
    assert 'is an input of this command' in log
    assert open(checkpoint, 'rb').read() == original
    out = tmp_path / 'exported.pth'
    log = run(export + [str(out)], cwd=str(tmp_path))
    assert 'folded' in log and 'T=' in log
    assert torch.load(out, weights_only=True)['meta']['calibseg_export']['calibrator'] == 'TemperatureScaling'


def test_command_line_errors(tiny_voc, checkpoint, tmp_path):
    log = run([osp.join(TOOLS, 'fit_calibrator.py'), DEMO_CONFIG, checkpoint, '--cfg-options',
               *as_cli_options(posthoc_options(tiny_voc))], cwd=str(tmp_path), ok=False)
    assert '--method is required' in log
    log = run([osp.join(TOOLS, 'posthoc_demo.py'), '--checkpoints', str(tmp_path / 'none.pth'), '--no-write'],
              cwd=str(tmp_path), ok=False)
    assert 'checkpoints not found' in log
