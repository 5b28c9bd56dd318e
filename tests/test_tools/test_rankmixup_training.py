"""RankMixup end to end: 2 gloo processes through tools/dist_train.sh (the delegated train_step, then --resume),
and a single-process resume that continues the exact sequence of mixup draws."""
from __future__ import annotations

import os
import os.path as osp
import re
import socket
import subprocess
import sys

import pytest
import torch
from calibseg_testing import ROOT, as_cli_options, tiny_run_options
from mmengine.runner import Runner

from calibseg.functional.mixup import draw_mixup
from calibseg.utils.run_setup import load_run_config

CONFIG = osp.join(ROOT, 'configs', 'rankmixup', 'fcn_r18-d16_rankmixup-{}_1xb8-600it_demo-voc12aug-96x96.py')
BATCH = 2  # tiny_run_options' batch per process


def _expected_lambdas(iters: int, num_mixups: int, seed: int = 0) -> list:
    """Mean lambda of every step, from the generator the configs seed (the same on every rank)."""
    g = torch.Generator().manual_seed(seed)
    return [draw_mixup(BATCH, num_mixups, 2.0, g).lams.mean().item() for _ in range(iters)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_train(voc_root, work_dir, max_iters, *extra):
    env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), CONFIG.format('mrl'), '2', '--work-dir', str(work_dir),
           *extra, '--cfg-options', *as_cli_options(tiny_run_options(voc_root, max_iters=max_iters))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def _logged_lambdas(log: str) -> dict:
    """{iteration: mixup_lambda} from mmengine's training log lines."""
    out = {}
    for match in re.finditer(r'Iter\(train\) \[\s*(\d+)/\d+\].*?mixup_lambda: ([0-9.]+)', log):
        out[int(match.group(1))] = float(match.group(2))
    return out


def test_two_processes_take_the_delegated_step_and_resume(tiny_voc, tmp_path):
    work_dir = tmp_path / 'dist'
    log = _dist_train(tiny_voc, work_dir, 2)
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    # the segmentor's own train_step ran under DDP (plain MMDistributedDataParallel would have raised)
    assert 'train_step delegated by the DDP wrapper TrainStepDelegatingDDP' in log
    assert re.search(r'Iter\(train\) \[2/2\].*loss_mrl: ', log), log[-3000:]
    assert osp.isfile(work_dir / 'iter_2.pth')

    log = _dist_train(tiny_voc, work_dir, 4, '--resume')
    assert re.search(r'resumed (epoch: \d+, )?iter: 2', log), log[-3000:]
    assert re.search(r'Iter\(train\) \[4/4\].*loss_mrl: ', log)
    assert osp.isfile(work_dir / 'iter_4.pth')
    # after resuming, the draws continue where the checkpoint left them (rank 0's log, 4 decimals)
    lambdas = _logged_lambdas(log)
    expected = _expected_lambdas(4, 1)
    assert sorted(lambdas) == [3, 4]
    for it, value in lambdas.items():
        assert value == pytest.approx(expected[it - 1], abs=1e-4)


def _train(voc_root, work_dir, max_iters, resume=False):
    cfg = load_run_config(CONFIG.format('mndcg'), work_dir=str(work_dir), resume=resume,
                          cfg_options=tiny_run_options(voc_root, max_iters=max_iters))
    cfg.experiment_name = f'rankmixup_{max_iters}_{resume}'
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner


def test_single_process_resume_continues_the_mixup_draws(tiny_voc, tmp_path):
    work_dir = tmp_path / 'single'
    first = _train(tiny_voc, work_dir, 2)
    assert first.model.delegated_train_steps == 0  # one process: the runner calls train_step directly
    resumed = _train(tiny_voc, work_dir, 4, resume=True)
    assert resumed.iter == 4
    history = resumed.message_hub.get_scalar('train/mixup_lambda').data[0].tolist()
    expected = _expected_lambdas(4, 3)
    assert history == pytest.approx(expected, abs=1e-6)
    assert 'train/loss_mndcg' in resumed.message_hub.log_scalars
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        draw_mixup(BATCH, 3, 2.0, g)
    assert torch.equal(resumed.model.mixup_generator.get_state(), g.get_state())
