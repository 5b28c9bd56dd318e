"""tools/analyze_calibration.py end to end: the report, resuming shift sweeps, 2 processes = 1 process, a packaged
mmseg config, a one-channel head."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from calibseg_testing import DEMO_CONFIG, ROOT, as_cli_options, save_random_checkpoint, tiny_run_options

TOOL = osp.join(ROOT, 'tools', 'analyze_calibration.py')
SECTIONS = ('## Summary', '## Headline', '## Reliability', '## Per class', '## Near label boundaries',
            '## Per image', '## Worst-calibrated images', '## Under corruption', '## Definitions')


def run(args, *, check=True, nproc=1):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    if nproc == 1:
        cmd = [sys.executable, TOOL] + args
    else:
        cmd = ['bash', osp.join(ROOT, 'tools', 'dist_analyze.sh'), args[0], args[1], str(nproc)] + args[2:]
        env.update(PYTHON=sys.executable, PORT='29517')
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f'exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return save_random_checkpoint(str(tmp_path_factory.mktemp('ckpt') / 'iter_2.pth'))


def _args(tiny_voc, checkpoint, out, *extra):
    return [DEMO_CONFIG, checkpoint, '--out', str(out), '--calibrators', 'ts', 'lts', '--corruptions',
            'gaussian_noise', 'fog', '--severities', '1', '5', '--worst-k', '3', '--cfg-options',
            *as_cli_options(tiny_run_options(tiny_voc))] + list(extra)


def _numbers(results):
    """results.json without the fields that describe the run rather than the model (process count, times)."""
    out = {k: v for k, v in results.items() if k not in ('seconds', 'processes')}
    out['calibrators'] = {name: {k: v for k, v in info.items() if k != 'fit_seconds'}
                          for name, info in results['calibrators'].items()}
    return out


@pytest.fixture(scope='module')
def single(tiny_voc, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp('analysis') / 'one'
    proc = run(_args(tiny_voc, checkpoint, out))
    return out, proc, json.loads((out / 'results.json').read_text())


def test_report_has_every_element(single):
    out, proc, results = single
    text = (out / 'report.md').read_text()
    for section in SECTIONS:
        assert section in text, section
    for name in ('reliability_uncalibrated.png', 'reliability_ts.png', 'reliability_lts.png', 'per_class.png',
                 'boundary_distance.png', 'image_ece.png', 'worst_images.png', 'shift_ece.png', 'shift_miou.png'):
        assert (out / name).stat().st_size > 1000, name
        assert f']({name})' in text
    assert set(results['methods']) == {'uncalibrated', 'ts', 'lts'}
    head = results['methods']['uncalibrated']['headline']
    for key in ('mIoU', 'ECE_15', 'OE_15', 'UE_15', 'cwCE_15', 'NLL', 'Brier', 'AUROC', 'FPR95'):
        assert head[key] is not None, key
    assert 'over-confident' in text or 'under-confident' in text
    assert 'of the calibration error lies within 2 px of a label boundary' in text
    assert set(results['shift']) == {'gaussian_noise', 'fog'}
    assert set(results['shift']['fog']) == {'1', '5'}
    assert len(results['methods']['uncalibrated']['worst']) == 3
    assert 'images,' in proc.stdout and 'img/s' in proc.stdout  # progress lines
    # the held-out split: calibrators see other images than the evaluated ones
    assert results['fit_split'].startswith('held-out')
    evaluated = {r['img_path'] for r in results['methods']['uncalibrated']['images']}
    assert len(evaluated) == results['test_images']


def test_existing_output_is_refused_and_resume_keeps_finished_cells(single, tiny_voc, checkpoint, tmp_path):
    out, _, first = single
    refused = run(_args(tiny_voc, checkpoint, out), check=False)
    assert refused.returncode != 0 and 'already holds an analysis' in refused.stderr
    copy = tmp_path / 'resumed'
    copy.mkdir()
    (copy / 'shift').mkdir()
    for name in os.listdir(out / 'shift'):
        (copy / 'shift' / name).write_bytes((out / 'shift' / name).read_bytes())
    (copy / 'shift' / 'fog-s5.json').unlink()  # interrupted before this cell
    broken = copy / 'shift' / 'fog-s1.json'
    broken.write_bytes(broken.read_bytes()[:40])  # interrupted while writing (not possible with the atomic
    kept = copy / 'shift' / 'gaussian_noise-s1.json'  # write, but a copied or damaged file must not count)
    before = kept.stat().st_mtime_ns
    proc = run(_args(tiny_voc, checkpoint, copy, '--resume'))
    assert 'fog severity 5' in proc.stdout and 'fog severity 1' in proc.stdout
    assert 'gaussian_noise severity 1' not in proc.stdout
    assert kept.stat().st_mtime_ns == before
    again = json.loads((copy / 'results.json').read_text())
    assert again['shift'] == first['shift']


def test_two_processes_give_the_same_report(single, tiny_voc, checkpoint, tmp_path):
    _, _, first = single
    out = tmp_path / 'two'
    run(_args(tiny_voc, checkpoint, out), nproc=2)
    second = json.loads((out / 'results.json').read_text())
    assert second['processes'] == 2
    _close(_numbers(second), _numbers(first))


def _close(a, b, path=''):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _close(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f'{path}[{i}]')
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9), path
    else:
        assert a == b, path
    return True


def test_packaged_mmseg_config_is_accepted(tiny_voc, tmp_path):
    name = 'mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py'
    from calibseg.apis.analyze import load_analysis_config

    cfg = load_analysis_config(name)
    config_file = tmp_path / 'packaged.py'
    cfg.dump(str(config_file))
    ckpt = save_random_checkpoint(str(tmp_path / 'r50.pth'), str(config_file), logit_scale=5.0)
    out = tmp_path / 'r50'
    options = [f'test_dataloader.dataset.data_root={tiny_voc}', 'test_dataloader.dataset.pipeline.1.scale=(48,48)',
               'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    run([name, ckpt, '--out', str(out), '--worst-k', '2', '--quiet', '--cfg-options', *options])
    results = json.loads((out / 'results.json').read_text())
    assert results['config'] == name and results['num_classes'] == 21
    assert results['methods']['uncalibrated']['headline']['ECE_15'] is not None


def test_one_channel_head(demo_generator, tmp_path):
    demo_generator.generate_duts(str(tmp_path / 'data'), num_train=2, num_test=4, size=32, seed=0)
    config = osp.join(ROOT, 'configs', 'saliency', 'fcn_r18-d16_bce_1xb8-30ep_demo-duts-96x96.py')
    ckpt = save_random_checkpoint(str(tmp_path / 'bce.pth'), config, logit_scale=3.0)
    out = tmp_path / 'bce'
    root = str(tmp_path / 'data' / 'DUTS')
    run([config, ckpt, '--out', str(out), '--calibrators', 'ts', '--fit-split', 'heldout', '--held-out', '0.5',
         '--quiet', '--cfg-options', f'test_dataloader.dataset.data_root={root}',
         f'val_dataloader.dataset.data_root={root}', 'model.data_preprocessor.size=(32,32)'])
    results = json.loads((out / 'results.json').read_text())
    assert results['binary'] is True
    head = results['methods']['uncalibrated']['headline']
    assert head['MAE'] is not None and head['ECE_10'] is not None
    assert 'MAE' in (out / 'report.md').read_text()
