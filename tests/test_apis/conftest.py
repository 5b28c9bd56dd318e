"""Fixtures of the post-hoc / inference API tests: the demo FCN saved like a Runner's checkpoint."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope='session')
def checkpoint(tmp_path_factory):
    """The demo FCN saved like a Runner's: random weights, a classifier scaled to logits of a few units and biased
    towards the background (so that part of the pixels are right), non-trivial BN statistics."""
    from calibseg_testing import DEMO_CONFIG
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import calibseg  # noqa: F401

    init_default_scope('mmseg')
    cfg = Config.fromfile(DEMO_CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        model.decode_head.conv_seg.weight.mul_(30.0)
        model.decode_head.conv_seg.bias[0] = 3.0
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp('ckpt') / 'iter_2.pth'
    torch.save({'meta': {'iter': 2, 'dataset_meta': {'classes': tuple(f'c{k}' for k in range(21))}},
                'state_dict': model.state_dict()}, path)
    return str(path)
