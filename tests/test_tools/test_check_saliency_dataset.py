"""tools/dataset_converters/check_saliency_dataset.py as a command line: report, exit status, repack, --force.

The checks themselves are tested in tests/test_datasets/test_saliency_check.py."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'dataset_converters', 'check_saliency_dataset.py')


def _run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_command_line(tmp_path):
    for stem in ('a', 'b'):
        os.makedirs(tmp_path / 'ds' / 'Image', exist_ok=True)
        os.makedirs(tmp_path / 'ds' / 'Mask', exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / 'ds' / 'Image' / f'{stem}.jpg')
        mask = np.zeros((8, 8), np.uint8)
        mask[2:6, 2:6] = 255 if stem == 'a' else 1  # b is a 0/1 label map
        Image.fromarray(mask).save(tmp_path / 'ds' / 'Mask' / f'{stem}.png')
    out = tmp_path / 'out'
    res = _run(str(tmp_path / 'ds'), '--layout', 'repack', '--repack', str(out), '--name', 'X')
    assert res.returncode == 1, res.stderr
    assert 'not a 0/255 mask: b.png' in res.stdout and 'repacked 2 pair(s)' in res.stdout
    os.remove(out / 'X' / 'Mask' / 'b.png')
    res = _run(str(tmp_path / 'ds'), '--layout', 'repack', '--repack', str(out), '--name', 'X')
    assert res.returncode == 2 and 'exists and is not empty' in res.stderr
    assert sorted(os.listdir(out / 'X' / 'Mask')) == ['a.png']  # refused: nothing written
    res = _run(str(tmp_path / 'ds'), '--layout', 'repack', '--repack', str(out), '--name', 'X', '--force')
    assert res.returncode == 1 and sorted(os.listdir(out / 'X' / 'Mask')) == ['a.png', 'b.png']
