"""tools/test.py on a checkpoint written by tools/train.py: mIoU beside the calibration table and diagrams."""
from __future__ import annotations

import glob
import os.path as osp
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
    assert 'mIoU:' in log and 'ECE:' in log and 'ECE_em_500:' in log
    pngs = glob.glob(str(tmp_path / 'test' / '*' / 'reliability' / 'test_*_PixelCalibrationMetric.png'))
    assert len(pngs) == 1
