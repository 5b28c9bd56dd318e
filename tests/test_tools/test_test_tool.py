"""tools/test.py on a checkpoint written by tools/train.py: mIoU beside the calibration table and diagrams."""
from __future__ import annotations

import glob
import os
import os.path as osp
import socket
import subprocess
import sys

from calibseg_testing import DEMO_CONFIG, ROOT, as_cli_options, tiny_run_options


def _run(args, cwd):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def test_train_then_test_prints_calibration_and_writes_diagrams(tiny_voc, tmp_path):
    options = as_cli_options(tiny_run_options(tiny_voc, max_iters=2))
    work_dir = tmp_path / 'run'
    _run([osp.join(ROOT, 'tools', 'train.py'), DEMO_CONFIG, '--work-dir', str(work_dir),
          '--cfg-options', *options], cwd=str(tmp_path))
    ckpt = work_dir / 'iter_2.pth'
    assert ckpt.is_file()
    log = _run([osp.join(ROOT, 'tools', 'test.py'), DEMO_CONFIG, str(ckpt), '--work-dir', str(tmp_path / 'test'),
                '--cfg-options', *options], cwd=str(tmp_path))
    assert 'trusted' in log  # the named checkpoint goes through the explicit trusted loader
    assert 'per-class calibration (pooled' in log and 'cwECE_15' in log
    assert 'mIoU:' in log and 'ECE:' in log and 'ECE_em_15:' in log  # the metric's headline keys
    pngs = glob.glob(str(tmp_path / 'test' / '*' / 'reliability' / 'test_*_PixelCalibrationMetric.png'))
    assert len(pngs) == 1


def test_quiet_train_and_test_print_progress_and_results_only(tiny_voc, tmp_path):
    options = as_cli_options(tiny_run_options(tiny_voc, max_iters=4))
    work_dir = tmp_path / 'quiet'
    log = _run([osp.join(ROOT, 'tools', 'train.py'), DEMO_CONFIG, '--work-dir', str(work_dir), '--quiet',
                '--cfg-options', *options], cwd=str(tmp_path))
    lines = log.splitlines()
    progress = [line for line in lines if ': iter ' in line and ' left' in line]
    assert [line.split(': iter ')[1].split()[0] for line in progress] == ['1/4', '2/4', '3/4', '4/4']
    others = [line for line in lines if line not in progress]
    # where the run and its log are, the validation result in a few lines, nothing else (no warnings expected)
    assert len(others) <= 6, log
    assert others[0].startswith('[calibseg] training fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96 in ')
    assert ': val at iter 4' in log and 'mIoU ' in log and 'ECE ' in log
    full_log = others[0].split('full log: ')[1].rstrip(')')
    text = open(full_log).read()
    assert 'System environment' in text and 'Iter(train) [4/4]' in text  # mmengine's standard log, in its file

    log = _run([osp.join(ROOT, 'tools', 'test.py'), DEMO_CONFIG, str(work_dir / 'iter_4.pth'), '--work-dir',
                str(tmp_path / 'quiet_test'), '--quiet', '--cfg-options', *options], cwd=str(tmp_path))
    lines = log.splitlines()
    assert 2 <= len(lines) <= 5, log
    assert lines[0].startswith('[calibseg] testing ') and ': test' in lines[1] and 'mIoU ' in log

    # the same test with torchrun, 2 CPU processes (gloo): one result, from the main process
    env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), DEMO_CONFIG, str(work_dir / 'iter_4.pth'),
                           '2', '--work-dir', str(tmp_path / 'dist_test'), '--quiet', '--cfg-options', *options],
                          env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert log.count(': test') == 1 and 'mIoU ' in log, log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
