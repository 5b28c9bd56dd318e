"""ASLP through tools/train.py: the alpha table survives resume exactly, and 2 gloo processes hold one table.

A tiny generated DUTS (8 training images of 32 px: 6 trained on, 2 held out), batch 2, 3 epochs with updates from
epoch 2. Random flips and dropout are off, so that a resumed run repeats the uninterrupted one exactly (mmengine
re-seeds the global RNG on resume; SC-BCE's own draws are re-seeded per step by the segmentor).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from calibseg_testing import ROOT

from calibseg.compat import load_trusted_checkpoint

ASLP_DEMO = osp.join(ROOT, 'configs', 'saliency', 'fcn_r18-d16_aslp_1xb8-30ep_demo-duts-96x96.py')
CONFIG = """
_base_ = [{base!r}]
data_root = {root!r}
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'), dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, dataset=dict(held_out=2, dataset=dict(data_root=data_root, pipeline=pipeline)))
aslp_val_dataloader = dict(dataset=dict(held_out=2, dataset=dict(data_root=data_root)))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
model = dict(update_from_epoch=2, data_preprocessor=dict(size=(32, 32)), decode_head=dict(dropout_ratio=0.0),
             auxiliary_head=dict(dropout_ratio=0.0))
train_cfg = dict(max_epochs=3, val_interval=3)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=3, by_epoch=True,
                        convert_to_iter_based=True)]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=-1), logger=dict(interval=1))
custom_hooks = [dict(type='ASLPHook', dataloader='aslp_val_dataloader', dump_table=True, dump_all_ranks=True)]
"""


@pytest.fixture(scope='module')
def tiny_config(tmp_path_factory, demo_generator):
    root = tmp_path_factory.mktemp('tiny_duts')
    demo_generator.generate_duts(str(root), num_train=8, num_test=2, size=32, seed=0)
    path = root / 'aslp_tiny.py'
    path.write_text(CONFIG.format(base=ASLP_DEMO, root=str(root / 'DUTS')))
    return str(path)


def _env(**extra):
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', **extra)


def _train(config, work_dir, *options):
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', str(work_dir), *options]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def _state(path):
    return load_trusted_checkpoint(str(path), map_location='cpu')['state_dict']


def _dump(work_dir, epoch, rank=0):
    return json.loads((work_dir / 'aslp' / f'alpha_epoch{epoch}_rank{rank}.json').read_text())


def test_resume_reproduces_the_alpha_table_exactly(tiny_config, tmp_path):
    full = tmp_path / 'full'
    log = _train(tiny_config, full)
    assert 'ASLP: alpha table initialised for 6 training images' in log
    assert 'ASLP epoch 1 [warm-up (updates from epoch 2)]' in log and 'ASLP epoch 3 [updating]' in log
    assert 'quantiles 0/25/50/75/100%' in log
    reference = _state(full / 'epoch_3.pth')
    alpha = reference['aslp_alpha']
    assert alpha.dtype == torch.float64 and alpha.shape == (6,)
    assert bool((alpha > 0).all()) and float(alpha.max()) <= 0.24  # every image updated after the warm-up
    assert _dump(full, 1)['alpha'] == [0.0] * 6  # warm-up epoch: no update
    assert int(reference['aslp_steps']) == 9  # 3 steps per epoch
    histograms = [f for d, _, files in os.walk(full) for f in files if f.startswith('aslp_alpha_histogram_')]
    assert sorted(histograms) == [f'aslp_alpha_histogram_{e}.png' for e in (1, 2, 3)]

    parted = tmp_path / 'parted'
    _train(tiny_config, parted, '--cfg-options', 'train_cfg.max_epochs=2')
    assert not osp.exists(parted / 'epoch_3.pth')
    assert _state(parted / 'epoch_2.pth')['aslp_alpha'].tolist() == _dump(full, 2)['alpha']
    log = _train(tiny_config, parted, '--resume')
    assert 'ASLP: alpha table restored for 6 training images' in log
    resumed = _state(parted / 'epoch_3.pth')
    assert torch.equal(resumed['aslp_alpha'], alpha)  # bit for bit
    assert torch.equal(resumed['aslp_acc_val'], reference['aslp_acc_val'])
    assert int(resumed['aslp_steps']) == 9
    for key, value in reference.items():  # the whole run was repeated, not only the table
        if isinstance(value, torch.Tensor):
            assert torch.equal(resumed[key], value), key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_gloo_processes_hold_identical_tables(tiny_config, tmp_path):
    work_dir = tmp_path / 'dist'
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), tiny_config, '2', '--work-dir', str(work_dir)]
    proc = subprocess.run(cmd, env=_env(PORT=str(_free_port()), PYTHON=sys.executable), capture_output=True,
                          text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log
    ranks = [_dump(work_dir, 3, rank) for rank in (0, 1)]
    assert [r['world_size'] for r in ranks] == [2, 2]
    # each rank trained on 3 of the 6 images per epoch (batch 2: 2 steps), all through the delegated train_step
    assert [r['delegated_train_steps'] for r in ranks] == [6, 6]
    assert [r['aslp_steps'] for r in ranks] == [6, 6]
    assert ranks[0]['alpha'] == ranks[1]['alpha'] and ranks[0]['keys'] == ranks[1]['keys']
    # every image was updated, half of them by the other rank: the all-gather merged both ranks' updates
    assert all(a > 0 for a in ranks[0]['alpha'])
    assert ranks[0]['acc_val'] == ranks[1]['acc_val']
    for epoch in (1, 2):
        assert _dump(work_dir, epoch, 0)['alpha'] == _dump(work_dir, epoch, 1)['alpha']
    assert _state(work_dir / 'epoch_3.pth')['aslp_alpha'].tolist() == ranks[0]['alpha']
