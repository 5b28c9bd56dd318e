"""Every shipped config parses, is named in mmseg's grammar with fields that match its content, and (method
folders) builds its model and evaluators; r101 configs are their r50 sibling with the backbone changed; no file in
configs/_base_/ is a runnable config."""
from __future__ import annotations

import ast
import glob
import math
import os.path as osp
import re

import pytest
from calibseg_testing import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import HOOKS, METRICS, MODELS

import calibseg  # noqa: F401

ALL_CONFIGS = sorted(p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                     if '_base_' not in osp.relpath(p, ROOT).split(osp.sep))
BASES = sorted(glob.glob(osp.join(ROOT, 'configs', '_base_', '**', '*.py'), recursive=True))
# Config folders with their own tests (binary saliency heads; post-hoc calibrated segmentors that need a fitted
# calibrator file): tests/test_configs_<folder>.py or the tools' tests cover them.
OWN_TESTS = {'saliency', 'posthoc'}
CONFIGS = [p for p in ALL_CONFIGS if osp.basename(osp.dirname(p)) not in OWN_TESTS]
R101 = [p for p in ALL_CONFIGS if '_r101-' in osp.basename(p)]

# mmseg's grammar: {model}_{backbone}_{method}_{N}xb{B}-{schedule}_{dataset}-{crop}.py
GRAMMAR = re.compile(r'^(?P<model>[a-z0-9]+)_r(?P<depth>\d+)-d(?P<stride>\d+)_(?P<method>[a-z0-9-]+)_'
                     r'(?P<gpus>\d+)xb(?P<batch>\d+)-(?P<length>\d+)(?P<unit>k|it|ep)_'
                     r'(?P<dataset>[a-z0-9-]+?)-(?P<height>\d+)x(?P<width>\d+)\.py$')
DECODE_HEADS = {'fcn': 'FCNHead', 'deeplabv3plus': 'DepthwiseSeparableASPPHead'}
DATASETS = {'voc12aug': 'PascalVOCDataset', 'duts': 'DUTSDataset', 'cityscapes': 'CityscapesDataset'}
R101_MODEL = dict(pretrained='open-mmlab://resnet101_v1c', backbone=dict(depth=101))


def _name(path: str) -> str:
    return osp.relpath(path, osp.join(ROOT, 'configs'))


def _datasets(cfg: dict) -> list[dict]:
    """Every dataset dict in a (possibly wrapped or concatenated) dataset config."""
    found = [cfg]
    for inner in [cfg.get('dataset')] + list(cfg.get('datasets') or []):
        if isinstance(inner, dict):
            found += _datasets(inner)
    return found


def test_every_method_has_demo_and_voc_configs():
    methods = {osp.basename(osp.dirname(p)) for p in CONFIGS}
    assert {'baseline', 'focal', 'adaptive_focal', 'label_smoothing', 'mbls', 'mdca', 'acls', 'rankmixup',
            'gamma_net'} <= methods
    for method in methods | OWN_TESTS:
        assert osp.isfile(osp.join(ROOT, 'configs', method, 'README.md')), method
    for method in {'baseline', 'focal', 'adaptive_focal', 'label_smoothing', 'mbls', 'mdca', 'acls', 'gamma_net'}:
        names = [osp.basename(p) for p in CONFIGS if osp.basename(osp.dirname(p)) == method]
        assert any('_demo-voc12aug-96x96' in n for n in names), method
        assert any(n.startswith('deeplabv3plus_r50-d8_') and 'voc12aug' in n for n in names), method
        assert any(n.startswith('deeplabv3plus_r101-d8_') and 'voc12aug' in n for n in names), method


def test_the_grammar_rejects_the_old_spellings():
    assert GRAMMAR.match('fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py')
    assert GRAMMAR.match('deeplabv3plus_r50-d8_svls_4xb2-80k_cityscapes-512x1024.py')
    assert not GRAMMAR.match('fcn_r18-os16_ce_600it_demo-voc12aug-96x96.py')
    assert not GRAMMAR.match('fcn_r18-d16_ce_600it_demo-voc12aug-96x96.py')  # no NxB field
    assert not GRAMMAR.match('deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512_calib.py')


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_name)
def test_config_name_follows_mmseg_grammar_and_matches_the_config(path):
    match = GRAMMAR.match(osp.basename(path))
    assert match, f'{_name(path)} is not ' + '{model}_{backbone}_{method}_{N}xb{B}-{schedule}_{dataset}-{crop}.py'
    f = match.groupdict()
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['calibseg'], allow_failed_imports=False)
    assert f['model'] in DECODE_HEADS, f"unknown model field {f['model']!r}: add its decode head to DECODE_HEADS"
    assert cfg.model.decode_head.type == DECODE_HEADS[f['model']]
    backbone = cfg.model.backbone
    assert backbone.depth == int(f['depth'])
    assert 4 * math.prod(backbone.strides) == int(f['stride'])  # the stem divides by 4
    assert cfg.train_dataloader.batch_size == int(f['batch'])
    length = int(f['length'])
    if f['unit'] == 'ep':
        assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == length
    else:
        assert cfg.train_cfg.type == 'IterBasedTrainLoop'
        assert cfg.train_cfg.max_iters == length * (1000 if f['unit'] == 'k' else 1)
    crop = (int(f['height']), int(f['width']))
    assert tuple(cfg.crop_size) == crop and tuple(cfg.model.data_preprocessor.size) == crop
    dataset = f['dataset']
    demo = dataset.startswith('demo-')
    dataset = dataset[len('demo-'):] if demo else dataset
    assert dataset in DATASETS, f'unknown dataset field {dataset!r}: add its dataset type to DATASETS'
    train = _datasets(cfg.train_dataloader.dataset)
    assert DATASETS[dataset] in {d['type'] for d in train}
    roots = [d['data_root'] for d in train if 'data_root' in d]
    assert roots and all(r.startswith('data/demo/') == demo for r in roots), roots
    if demo:  # CPU configs: no SyncBN anywhere (it fails under gloo on CPU)
        assert 'SyncBN' not in cfg.pretty_text


@pytest.mark.parametrize('path', R101, ids=_name)
def test_r101_config_is_its_r50_sibling_with_the_r101_backbone(path):
    sibling = osp.basename(path).replace('_r101-d8_', '_r50-d8_')
    assert osp.isfile(osp.join(osp.dirname(path), sibling)), sibling
    tree = ast.parse(open(path, encoding='utf-8').read())
    assigned = {node.targets[0].id: eval(compile(ast.Expression(node.value), path, 'eval'), {'dict': dict})
                for node in tree.body}
    assert assigned == {'_base_': f'./{sibling}', 'model': R101_MODEL}  # mmseg's two-line r101 config
    r101 = Config.fromfile(path).to_dict()
    r50 = Config.fromfile(osp.join(osp.dirname(path), sibling)).to_dict()
    assert r50['model']['backbone']['depth'] == 50 and r50['model']['pretrained'] == 'open-mmlab://resnet50_v1c'
    r50['model']['backbone']['depth'] = 101
    r50['model']['pretrained'] = 'open-mmlab://resnet101_v1c'
    assert r101 == r50


@pytest.mark.parametrize('path', BASES, ids=_name)
def test_no_runnable_config_in_base(path):
    cfg = Config.fromfile(path)
    assert not {'model', 'train_dataloader', 'train_cfg'} <= set(cfg.keys()), f'{_name(path)} is a full config'


@pytest.mark.parametrize('path', CONFIGS, ids=_name)
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
