"""configs/saliency: every config builds its model, evaluators and hooks, and the three methods differ only in the
loss (and ASLP's segmentor, wrapper and hook); a ``-soft`` config differs from its binarised sibling only in the
training targets (soft masks loaded, packed and handed to the losses; evaluation unchanged)."""
from __future__ import annotations

import glob
import os.path as osp

import pytest
from calibseg_testing import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import HOOKS, METRICS, MODELS

import calibseg  # noqa: F401
from calibseg.models.segmentors import ASLPEncoderDecoder, SoftTargetEncoderDecoder

CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'saliency', '*.py')))
TEST_SETS = {'DUTS-TE', 'ECSSD', 'HKU-IS', 'PASCAL-S', 'DUT-OMRON', 'SOD'}


def _method(path):
    """The method field without its ``-soft`` suffix."""
    method = osp.basename(path).split('_')[2]
    return method[:-len('-soft')] if method.endswith('-soft') else method


def _soft(path):
    return osp.basename(path).split('_')[2].endswith('-soft')


SOFT_AUX = dict(type='SCBCELoss', alpha=0.0, expected=True, loss_weight=0.4, loss_name='loss_bce')


def _pipelines(cfg):
    """``{name: pipeline}`` of every dataset in the config (train, held-out, val, test, the saliency test sets)."""
    out = {}
    for key in ('train_dataloader', 'aslp_val_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key].dataset
        out[key] = (dataset.get('dataset') or dataset).pipeline
    out.update({f'saliency_test_sets.{k}': v['pipeline'] for k, v in cfg.saliency_test_sets.items()})
    return out


def test_every_method_has_a_demo_and_a_384_config():
    names = {osp.basename(p) for p in CONFIGS}
    for method in ('bce', 'scbce', 'aslp'):
        assert f'fcn_r18-d16_{method}_1xb8-30ep_demo-duts-96x96.py' in names
        assert f'deeplabv3plus_r50-d8_{method}_1xb10-30ep_duts-384x384.py' in names
    readme = open(osp.join(ROOT, 'configs', 'saliency', 'README.md')).read()
    assert '<!-- calibseg:results:start -->' in readme and '<!-- calibseg:results:end -->' in readme


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['calibseg'], allow_failed_imports=False)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    for head in (model.decode_head, model.auxiliary_head):  # one sigmoid channel, decided at 0.5
        assert (head.num_classes, head.out_channels, head.threshold) == (2, 1, 0.5)
    loss = cfg.model.decode_head.loss_decode
    method = _method(path)
    if method == 'bce':
        assert loss == dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0, avg_non_ignore=True)
    else:
        assert set(loss) == {'type', 'beta', 'alpha', 'seed', 'loss_weight'}  # _delete_: no CE keys leaked
        assert loss['type'] == 'SCBCELoss' and loss['beta'] == 2.0
        assert loss['alpha'] == (None if method == 'aslp' else 0.025)
    aux = cfg.model.auxiliary_head.loss_decode
    if _soft(path):
        assert aux == SOFT_AUX and model.soft_targets
        for name, pipeline in _pipelines(cfg).items():  # soft masks are loaded for training only
            soft_loads = [t.get('soft', False) for t in pipeline if t['type'] == 'LoadBinaryAnnotations']
            assert soft_loads == [name == 'train_dataloader'], name
        train = [t['type'] for t in cfg.train_dataloader.dataset.dataset.pipeline]
        assert train[-1] == 'PackSaliencyInputs' and 'Resize' not in train
    else:
        assert aux['type'] == 'CrossEntropyLoss' and aux['use_sigmoid'] and aux['loss_weight'] == 0.4
        assert not getattr(model, 'soft_targets', False) and 'soft=True' not in cfg.pretty_text
    assert {e['type'] for e in cfg.test_evaluator} == {'SaliencyMetric', 'BinaryCalibrationMetric'}
    for e in cfg.val_evaluator:
        METRICS.build(e)
    for hook in cfg.custom_hooks:
        HOOKS.build(hook)
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 30
    assert cfg.train_dataloader.dataset.type == 'HeldOutSplit' and cfg.train_dataloader.dataset.part == 'train'
    for loader in (cfg.train_dataloader, cfg.test_dataloader):
        dataset = loader.dataset.get('dataset') or loader.dataset
        assert 'LoadBinaryAnnotations' in [t['type'] for t in dataset.pipeline]
    if method == 'aslp':
        assert isinstance(model, ASLPEncoderDecoder) and model.update_from_epoch == 6
        assert (model.beta, model.eta, model.lam, model.alpha_max) == (2.0, 0.002, 2000.0, pytest.approx(0.24))
        assert cfg.model_wrapper_cfg == dict(type='TrainStepDelegatingDDP')
        hook = next(h for h in cfg.custom_hooks if h['type'] == 'ASLPHook')
        held = cfg[hook['dataloader']].dataset
        train = cfg.train_dataloader.dataset
        # complementary parts of one split of the same DUTS-TR
        assert held.type == 'HeldOutSplit' and held.part == 'held_out'
        assert (held.held_out, held.seed, held.dataset.data_root) == (train.held_out, train.seed,
                                                                      train.dataset.data_root)
    else:
        assert type(model) is (SoftTargetEncoderDecoder if _soft(path) else MODELS.get('EncoderDecoder'))
        assert not any(h['type'] == 'ASLPHook' for h in cfg.custom_hooks)
    if '_demo-' in path:  # CPU configs: no SyncBN anywhere (it fails under gloo on CPU)
        assert 'SyncBN' not in cfg.pretty_text
        assert set(cfg.saliency_test_sets) == {'DUTS-TE'}
        assert cfg.train_dataloader.dataset.held_out == 12
    else:
        assert set(cfg.saliency_test_sets) == TEST_SETS
        assert (cfg.train_dataloader.batch_size, cfg.train_dataloader.dataset.held_out) == (10, 1000)
        assert cfg.optim_wrapper.optimizer == dict(type='Adam', lr=2.5e-5, betas=(0.9, 0.999), weight_decay=0.0)
        for ds in cfg.saliency_test_sets.values():
            assert ds['type'].endswith('Dataset') and ds['pipeline'] == cfg.test_pipeline  # no data here to load


def test_the_three_methods_share_everything_but_the_loss():
    for kind in ('fcn_r18-d16_{}_1xb8-30ep_demo-duts-96x96.py', 'deeplabv3plus_r50-d8_{}_1xb10-30ep_duts-384x384.py'):
        cfgs = {m: Config.fromfile(osp.join(ROOT, 'configs', 'saliency', kind.format(m))) for m in ('bce', 'scbce',
                                                                                                   'aslp')}
        base = cfgs['bce']
        for method, cfg in cfgs.items():
            for key in ('train_dataloader', 'test_dataloader', 'optim_wrapper', 'param_scheduler', 'train_cfg',
                        'randomness'):
                assert cfg.get(key) == base.get(key), (method, key)
            assert cfg.model.backbone == base.model.backbone


@pytest.mark.parametrize('path', [p for p in CONFIGS if _soft(p)], ids=osp.basename)
def test_soft_configs_change_only_the_training_targets(path):
    soft = Config.fromfile(path)
    hard = Config.fromfile(path.replace('-soft_', '_'))
    for key in ('test_dataloader', 'val_dataloader', 'aslp_val_dataloader', 'saliency_test_sets', 'val_evaluator',
                'optim_wrapper', 'param_scheduler', 'train_cfg', 'randomness', 'custom_hooks'):
        assert soft.get(key) == hard.get(key), key
    soft_train, hard_train = soft.train_dataloader.to_dict(), hard.train_dataloader.to_dict()
    soft_pipeline = soft_train['dataset']['dataset'].pop('pipeline')
    hard_pipeline = hard_train['dataset']['dataset'].pop('pipeline')
    assert soft_train == hard_train
    # the same transforms, with the soft mask loaded, resized bilinearly (SoftMaskResize) and packed
    renamed = {'Resize': 'SoftMaskResize', 'PackSegInputs': 'PackSaliencyInputs'}
    expected = [dict(t, type=renamed.get(t['type'], t['type'])) for t in hard_pipeline]
    for t in expected:
        if t['type'] == 'LoadBinaryAnnotations':
            t['soft'] = True
    assert soft_pipeline == expected
    soft_model, hard_model = soft.model.to_dict(), hard.model.to_dict()
    assert soft_model['auxiliary_head'].pop('loss_decode') == SOFT_AUX
    hard_model['auxiliary_head'].pop('loss_decode')
    if _method(path) == 'aslp':
        assert soft_model.pop('soft_targets') is True
    else:
        assert (soft_model.pop('type'), hard_model.pop('type')) == ('SoftTargetEncoderDecoder', 'EncoderDecoder')
    assert soft_model == hard_model
