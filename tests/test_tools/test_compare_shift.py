"""tools/compare_shift.py end to end: a model named on the command line and an mmengine work dir, a calibrator for
one of them, the comparison files, and the refusals of the command line."""
import json
import os
import subprocess
import sys

from calibseg_testing import DEMO_CONFIG, ROOT, as_cli_options, save_random_checkpoint, tiny_run_options
from mmengine.config import Config

TOOL = os.path.join(ROOT, 'tools', 'compare_shift.py')


def run(args):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, TOOL] + args, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=600)


def test_models_and_work_dirs_are_compared(tiny_voc, tmp_path):
    work_dir = tmp_path / 'work_dirs' / 'focal'
    work_dir.mkdir(parents=True)
    ckpt = save_random_checkpoint(str(work_dir / 'iter_4.pth'), seed=1)
    (work_dir / 'last_checkpoint').write_text(ckpt)
    Config.fromfile(DEMO_CONFIG).dump(str(work_dir / 'fcn_focal.py'))  # as the Runner dumps it
    other = save_random_checkpoint(str(tmp_path / 'ce.pth'), seed=0)
    out = tmp_path / 'cmp'
    args = ['--out', str(out), '--model', 'ce', DEMO_CONFIG, other, '--work-dirs', str(work_dir),
            '--calibrators', 'ts', '--calibrate', 'ce', '--corruptions', 'contrast', '--severities', '4',
            '--worst-k', '0', '--quiet', '--cfg-options', *as_cli_options(tiny_run_options(tiny_voc))]
    proc = run(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((out / 'comparison.json').read_text())
    assert list(table['lines']) == ['ce', 'ce+ts', 'focal']
    assert [m['calibrators'] for m in table['models']] == [['ts'], []]
    assert table['models'][1]['checkpoint'] == ckpt and table['same_images'] is True
    assert table['corruptions'] == ['contrast'] and table['severities'] == [4]
    text = (out / 'comparison.md').read_text()
    assert '| focal | `fcn_focal.py` | `iter_4.pth` |' in text and '## Severity 4' in text
    for name in ('ce', 'focal'):
        assert (out / name / 'report.md').is_file() and (out / name / 'shift' / 'contrast-s4.json').is_file()
    refused = run(args)
    assert refused.returncode != 0 and 'already holds a comparison' in refused.stderr


def test_command_line_errors(tmp_path):
    proc = run(['--out', str(tmp_path / 'o')])
    assert proc.returncode == 2 and 'give at least one --model' in proc.stderr
    ckpt = str(tmp_path / 'x.pth')
    open(ckpt, 'wb').close()
    proc = run(['--out', str(tmp_path / 'o'), '--model', 'ce', DEMO_CONFIG, ckpt, '--calibrators', 'ts',
                '--calibrate', 'mbls'])
    assert proc.returncode == 2 and '--calibrate mbls: no such model (models: ce)' in proc.stderr
    assert not (tmp_path / 'o').exists()
