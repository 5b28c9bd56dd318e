"""Every shipped config parses, names registered calibseg types, and builds its model and evaluators."""
from __future__ import annotations

import glob
import os.path as osp

import pytest
from calibseg_testing import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import HOOKS, METRICS, MODELS

import calibseg  # noqa: F401

# Config folders with their own tests (binary saliency heads; post-hoc calibrated segmentors that need a fitted
# calibrator file): tests/test_configs_<folder>.py or the tools' tests cover them.
OWN_TESTS = {'saliency', 'posthoc'}
CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py'))
                 if '_base_' not in p and osp.basename(osp.dirname(p)) not in OWN_TESTS)


def test_every_method_has_demo_and_voc_configs():
    methods = {osp.basename(osp.dirname(p)) for p in CONFIGS}
    assert {'baseline', 'focal', 'adaptive_focal', 'label_smoothing', 'mbls', 'mdca', 'acls'} <= methods
    for method in methods:
        names = [osp.basename(p) for p in CONFIGS if osp.basename(osp.dirname(p)) == method]
        assert any('_demo-voc12aug-96x96' in n for n in names), method
        assert any(n.startswith('deeplabv3plus_r50-d8_') for n in names), method
        assert any(n.startswith('deeplabv3plus_r101-d8_') for n in names), method
        assert osp.isfile(osp.join(ROOT, 'configs', method, 'README.md')), method


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.basename(p))
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['calibseg'], allow_failed_imports=False)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    loss = cfg.model.decode_head.loss_decode
    assert type(model.decode_head.loss_decode).__name__ == loss['type']
    if loss['type'] == 'CrossEntropyLoss':
        assert loss['avg_non_ignore'] is True
    aux = cfg.model.auxiliary_head.loss_decode
    assert aux['type'] == 'CrossEntropyLoss' and aux['loss_weight'] == 0.4  # mmseg's auxiliary CE kept
    evaluators = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) else [cfg.val_evaluator]
    assert {e['type'] for e in evaluators} == {'IoUMetric', 'PixelCalibrationMetric'}
    for e in evaluators:
        METRICS.build(e)
    for hook in cfg.custom_hooks:
        HOOKS.build(hook)
    if '_demo-' in path:  # CPU configs: no SyncBN anywhere (it fails under gloo on CPU)
        assert 'SyncBN' not in cfg.pretty_text
