"""tools/dataset_converters/generate_demo_data.py: the command line of calibseg.datasets.demo."""
import hashlib
import os
import subprocess
import sys
from os import path as osp

from calibseg_testing import ROOT

from calibseg.datasets.demo import generate_demo_data

SCRIPT = osp.join(ROOT, 'tools', 'dataset_converters', 'generate_demo_data.py')


def _tree_digest(root):
    digest = {}
    for dirpath, _, files in os.walk(str(root)):
        for name in files:
            with open(osp.join(dirpath, name), 'rb') as f:
                digest[osp.relpath(osp.join(dirpath, name), str(root))] = hashlib.sha256(f.read()).hexdigest()
    return digest


def test_cli_writes_what_the_library_writes(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, '--out', str(tmp_path / 'cli'), '--voc-train', '3', '--voc-val',
                           '1', '--duts-train', '2', '--duts-test', '1', '--size', '24', '--seed', '7', '--cityscapes'],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '[voc]' in proc.stdout and '[duts]' in proc.stdout
    generate_demo_data(str(tmp_path / 'lib'), voc_train=3, voc_val=1, duts_train=2, duts_test=1, size=24, seed=7,
                       cityscapes=True)
    assert sorted(os.listdir(str(tmp_path / 'cli'))) == ['DUTS', 'VOCdevkit', 'cityscapes']
    assert _tree_digest(tmp_path / 'cli') == _tree_digest(tmp_path / 'lib')


def test_cli_only_duts(tmp_path):
    proc = subprocess.run([sys.executable, SCRIPT, '--out', str(tmp_path), '--only', 'duts', '--duts-train', '2',
                           '--duts-test', '1', '--size', '24'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(str(tmp_path))) == ['DUTS']
    assert len(os.listdir(str(tmp_path / 'DUTS' / 'DUTS-TR' / 'DUTS-TR-Image'))) == 2
