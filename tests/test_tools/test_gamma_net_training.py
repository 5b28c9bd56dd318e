"""γ-Net end to end: tools/train.py single-process, resume, and tools/dist_train.sh with 2 gloo processes."""
from __future__ import annotations

import copy
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import torch
from calibseg_testing import ROOT, as_cli_options
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner

from calibseg.compat import load_trusted_checkpoint, trusted
from calibseg.utils.run_setup import load_run_config

CONFIG = osp.join(ROOT, 'configs', 'gamma_net', 'fcn_r18-d16_gamma-net_1xb8-600it_demo-voc12aug-96x96.py')


def gamma_run_options(voc_root: str, *, max_iters: int, held_out: int = 4, checkpoint_interval: int = 2,
                      check_sync: bool = False) -> dict:
    """--cfg-options for a seconds-long γ-Net run on ``voc_root`` (both parts of the split moved together)."""
    options = {
        'train_dataloader.batch_size': 2,
        'train_dataloader.dataset.held_out': held_out,
        'model.meta.dataloader.batch_size': 2,
        'model.meta.dataloader.dataset.held_out': held_out,
        'model.meta.check_sync': check_sync,
        'val_dataloader.dataset.data_root': voc_root,
        'test_dataloader.dataset.data_root': voc_root,
        'model.data_preprocessor.size': (32, 32),
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': max_iters,
        'param_scheduler.0.end': max_iters,
        'default_hooks.checkpoint.interval': checkpoint_interval,
        'default_hooks.logger.interval': 1,
    }
    for part in ('train_dataloader.dataset.dataset', 'model.meta.dataloader.dataset.dataset'):
        for index in (0, 1):
            options[f'{part}.datasets.{index}.data_root'] = voc_root
    return options


def _gamma_state(model) -> dict:
    return dict(params={k: v.detach().clone() for k, v in model.gamma_net.state_dict().items()},
                optimizer=copy.deepcopy(model.meta_optimizer.state_dict()), meta_batches=int(model.meta_batches_seen))


@HOOKS.register_module(name='_GammaNetTestCaptureHook', force=True)
class _CaptureHook(Hook):
    """Records γ-Net's state when training starts, i.e. right after the Runner has resumed."""

    captured: dict = {}

    def before_train(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        type(self).captured = _gamma_state(model)


def test_single_process_train_and_resume(tiny_voc, tmp_path):
    work_dir = str(tmp_path / 'run')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG, '--work-dir', work_dir, '--cfg-options',
           *as_cli_options(gamma_run_options(tiny_voc, max_iters=2))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'gamma_mean' in log and 'meta_sece' in log and 'mIoU' in log
    ckpt = load_trusted_checkpoint(trusted(osp.join(work_dir, 'iter_2.pth')))
    state = ckpt['state_dict']
    assert int(state['meta_batches_seen']) == 2
    assert [int(state[f'meta_optimizer_state.{i}.step']) for i in range(4)] == [2, 2, 2, 2]
    assert float(state['gamma_net.layers.2.weight'].abs().max()) > 0  # moved from its zero initialisation

    # resume in this process: the state the Runner restored is exactly the checkpoint's
    cfg = load_run_config(CONFIG, work_dir=work_dir, resume=True,
                          cfg_options=gamma_run_options(tiny_voc, max_iters=3))
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='_GammaNetTestCaptureHook')]
    cfg.experiment_name = 'gamma_net_resumed'
    runner = Runner.from_cfg(cfg)
    runner.train()
    restored = _CaptureHook.captured
    assert restored['meta_batches'] == 2
    for key, value in restored['params'].items():
        assert torch.equal(value, state[f'gamma_net.{key}']), key
    assert sorted(restored['optimizer']['state']) == [0, 1, 2, 3]
    for index, entry in restored['optimizer']['state'].items():
        for name in ('step', 'exp_avg', 'exp_avg_sq'):
            assert torch.equal(entry[name], state[f'meta_optimizer_state.{index}.{name}']), (index, name)
    # and training continued from there: the third step is the meta optimiser's third
    assert runner.iter == 3
    final = _gamma_state(runner.model)
    assert final['meta_batches'] == 3
    assert all(int(s['step']) == 3 for s in final['optimizer']['state'].values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_gloo_training_takes_the_delegated_path(tiny_voc, tmp_path):
    work_dir = tmp_path / 'dist'
    env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    options = gamma_run_options(tiny_voc, max_iters=3, checkpoint_interval=3, check_sync=True)
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CONFIG, '2', '--work-dir', str(work_dir),
           '--cfg-options', *as_cli_options(options)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    scalars = glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))
    assert len(scalars) == 1, scalars
    with open(scalars[0]) as f:
        records = [json.loads(line) for line in f if '"gamma_net_rank_diff"' in line]
    assert [r['step'] for r in records] == [1, 2, 3]
    # TrainStepDelegatingDDP handed every step to the segmentor (its counter, logged each step) ...
    assert [r['delegated_steps'] for r in records] == [1.0, 2.0, 3.0]
    # ... and γ-Net, kept out of DDP, is identical on both ranks after every meta update (exact zero)
    assert all(r['gamma_net_rank_diff'] == 0.0 for r in records)
    assert all(0 < r['gamma_mean'] < 5 for r in records)
    state = load_trusted_checkpoint(trusted(str(work_dir / 'iter_3.pth')))['state_dict']
    assert [int(state[f'meta_optimizer_state.{i}.step']) for i in range(4)] == [3, 3, 3, 3]
    assert float(state['gamma_net.layers.2.weight'].abs().max()) > 0
