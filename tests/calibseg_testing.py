"""Helpers shared by calibseg's tests (imported as a module; fixtures live in conftest.py)."""
from __future__ import annotations

import os.path as osp

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'baseline', 'fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py')


def tiny_run_options(voc_root: str, *, max_iters: int = 4, batch_size: int = 2) -> dict:
    """--cfg-options that turn the demo config into a seconds-long run on ``voc_root``."""
    return {
        'train_dataloader.dataset.datasets.0.data_root': voc_root,
        'train_dataloader.dataset.datasets.1.data_root': voc_root,
        'train_dataloader.batch_size': batch_size,
        'val_dataloader.dataset.data_root': voc_root,
        'test_dataloader.dataset.data_root': voc_root,
        'model.data_preprocessor.size': (32, 32),
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': max_iters,
        'param_scheduler.0.end': max_iters,
        'default_hooks.checkpoint.interval': max_iters // 2,
        'default_hooks.logger.interval': 1,
    }


def as_cli_options(options: dict) -> list:
    """Render options for ``--cfg-options`` on a command line."""
    out = []
    for key, value in options.items():
        if isinstance(value, tuple):
            value = '(' + ','.join(str(v) for v in value) + ')'
        out.append(f'{key}={value}')
    return out


# ---------------------------------------------------------------- calibration-metric samples
K = 5
CLASSES = tuple(f'c{i}' for i in range(K))


def make_samples(n: int, *, seed: int = 0, size=(6, 7), k: int = K):
    """Data samples as mmseg's model returns them: seg_logits (K,H,W), gt_sem_seg (1,H,W)."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        logits = torch.randn(k, *size, generator=g) * 3
        labels = torch.randint(0, k, size, generator=g)
        labels[torch.rand(size, generator=g) < 0.1] = 255
        samples.append(dict(seg_logits=dict(data=logits), gt_sem_seg=dict(data=labels[None]),
                            img_path=f'img_{i}.jpg'))
    return samples


def run_metric(metric, samples, batch_size=1):
    metric.dataset_meta = dict(classes=CLASSES)
    for start in range(0, len(samples), batch_size):
        metric.process({}, samples[start:start + batch_size])
    return metric.evaluate(len(samples))


# ---------------------------------------------------------------- post-hoc calibration (W1)
POSTHOC_CONFIG = osp.join(ROOT, 'configs', 'posthoc', 'fcn_r18-d16_ce-{}_1xb8-600it_demo-voc12aug-96x96.py')


def posthoc_options(voc_root: str) -> dict:
    """The tiny-run options, with the post-hoc demo configs' calibration images (tiny VOC's val set here too)."""
    return dict(tiny_run_options(voc_root), **{'calib_dataloader.dataset.data_root': voc_root})


# ---------------------------------------------------------------- checkpoints of untrained models
def save_random_checkpoint(path: str, config: str = DEMO_CONFIG, *, seed: int = 0, logit_scale: float = 30.0,
                           cfg_options: dict = None) -> str:
    """Save a config's model with random weights like a Runner checkpoint (classifier scaled to logits of a few
    units, background favoured for multi-class heads, so part of the pixels are right)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import calibseg  # noqa: F401

    init_default_scope('mmseg')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.model.pop('pretrained', None)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    with torch.no_grad():
        model.decode_head.conv_seg.weight.mul_(logit_scale)
        if model.decode_head.out_channels > 1:
            model.decode_head.conv_seg.bias[0] = 3.0
    classes = tuple(f'c{k}' for k in range(max(model.decode_head.out_channels, 2)))
    torch.save({'meta': {'iter': 2, 'dataset_meta': {'classes': classes}}, 'state_dict': model.state_dict()}, path)
    return path


# ------------------------------------------------------------------------------------ real multi-process runs
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _gloo_worker(target, rank: int, world: int, port: int, args: tuple, queue) -> None:
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        queue.put((rank, target(rank, *args)))
    finally:
        dist.destroy_process_group()


def run_gloo(target, *args, world: int = 2, timeout: float = 300) -> dict:
    """Run ``target(rank, *args)`` in ``world`` fresh processes joined by a real gloo process group; return
    ``{rank: result}``. ``target`` must be a module-level function of an importable module (a test module is)
    and its result picklable; a process that fails or hangs fails the test."""
    import multiprocessing as mp

    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_gloo_worker, args=(target, rank, world, port, args, queue)) for rank in range(world)]
    for proc in procs:
        proc.start()
    try:
        results = dict(queue.get(timeout=timeout) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
    assert [proc.exitcode for proc in procs] == [0] * world
    return results


def one_conv_backbone() -> str:
    """Register (once) and return the name of a toy backbone: one 1x1 conv from 3 to 4 channels, one feature
    level, for segmentor tests whose heads get zero weights so that their losses are known by hand."""
    from mmseg.registry import MODELS
    from torch import nn

    name = '_OneConvTestBackbone'
    if MODELS.get(name) is None:
        @MODELS.register_module(name=name)
        class _OneConvBackbone(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 1)

            def forward(self, x):
                return [self.conv(x)]
    return name
