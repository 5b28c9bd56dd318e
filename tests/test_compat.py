"""calibseg.compat: checkpoints of mmengine's Runner under torch >= 2.6, and CPU torchrun runs."""
from __future__ import annotations

import os
import os.path as osp
import pickle
import socket
import subprocess
import sys

import pytest
import torch
from calibseg_testing import DEMO_CONFIG, ROOT, as_cli_options, tiny_run_options
from mmengine.runner import Runner

from calibseg.compat import TRUSTED_PREFIX, load_trusted_checkpoint, trusted
from calibseg.utils.run_setup import load_run_config

TORCH_SAFE_BY_DEFAULT = tuple(int(v) for v in torch.__version__.split('.')[:2]) >= (2, 6)


def _train(voc_root, work_dir, *, max_iters, resume=False, name='run'):
    cfg = load_run_config(DEMO_CONFIG, work_dir=work_dir, resume=resume,
                          cfg_options=tiny_run_options(voc_root, max_iters=max_iters))
    cfg.experiment_name = name
    runner = Runner.from_cfg(cfg)
    runner.train()
    return cfg, runner


def test_trusted_marks_a_path_once():
    assert trusted('a/b.pth') == TRUSTED_PREFIX + 'a/b.pth'
    assert trusted(trusted('a/b.pth')) == TRUSTED_PREFIX + 'a/b.pth'


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_trusted_checkpoint(trusted(str(tmp_path / 'nope.pth')))


def test_runner_checkpoint_loads_and_resumes(tiny_voc, tmp_path):
    work_dir = str(tmp_path / 'run')
    _, runner = _train(tiny_voc, work_dir, max_iters=4, name='first')
    ckpt = osp.join(work_dir, 'iter_4.pth')
    assert osp.isfile(ckpt)
    if TORCH_SAFE_BY_DEFAULT:  # the trap this module exists for: torch's default loader rejects it
        with pytest.raises(pickle.UnpicklingError):
            torch.load(ckpt)
    state = load_trusted_checkpoint(trusted(ckpt))
    assert state['meta']['iter'] == 4
    weights_after_4 = {k: v.clone() for k, v in runner.model.state_dict().items()}
    for key, value in state['state_dict'].items():
        torch.testing.assert_close(value, weights_after_4[key])

    cfg, resumed = _train(tiny_voc, work_dir, max_iters=6, resume=True, name='second')
    assert cfg.load_from == trusted(ckpt)
    assert resumed.iter == 6
    # the optimizer state came back too: momentum buffers exist for every parameter from the first step
    assert len(resumed.optim_wrapper.optimizer.state) > 0


def test_load_without_weights_only_argument(monkeypatch, tmp_path):
    """torch < 1.13 has no ``weights_only`` (and < 2.4 no add_safe_globals): the trusted path still loads."""
    path = tmp_path / 'plain.pth'
    torch.save({'a': torch.ones(2)}, path)
    real_load = torch.load

    def old_load(f, map_location=None, **kwargs):
        if kwargs:
            raise TypeError(f'load() got an unexpected keyword argument {next(iter(kwargs))!r}')
        return real_load(f, map_location=map_location, weights_only=False)

    monkeypatch.setattr(torch, 'load', old_load)
    monkeypatch.delattr(torch.serialization, 'add_safe_globals', raising=False)
    assert torch.equal(load_trusted_checkpoint(str(path))['a'], torch.ones(2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_gloo_train_and_val(tiny_voc, tmp_path):
    """torchrun with 2 CPU processes: mmengine's launcher would call torch.cuda.set_device and fail."""
    work_dir = tmp_path / 'dist'
    env = dict(os.environ, PORT=str(_free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), DEMO_CONFIG, '2', '--work-dir', str(work_dir),
           '--cfg-options', *as_cli_options(tiny_run_options(tiny_voc, max_iters=4))]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert 'mIoU' in log  # validation ran at the end of training
    assert osp.isfile(work_dir / 'iter_4.pth')
