"""Cityscapes configs: every training method has one on mmseg's Cityscapes bases, its parts build, and one of them
trains and validates for a few iterations on the generated Cityscapes layout (CPU, BN instead of SyncBN)."""
from __future__ import annotations

import glob
import math
import os.path as osp

import pytest
from calibseg_testing import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import METRICS, MODELS

import calibseg  # noqa: F401
from calibseg.datasets.demo.cityscapes import generate_cityscapes
from calibseg.utils.run_setup import load_run_config

SUFFIX = '_4xb2-80k_cityscapes-512x1024.py'
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '*', 'deeplabv3plus_r50-d8_*' + SUFFIX)))
# every train-time method: CE, the six losses, SVLS, NACL, RankMixup MRL/M-NDCG, γ-Net
METHODS = {'ce': 'CrossEntropyLoss', 'focal': 'SoftmaxFocalLoss', 'adaptive-focal': 'AdaptiveFocalLoss',
           'ls': 'LabelSmoothingLoss', 'mbls': 'MbLSLoss', 'mdca': 'MDCALoss', 'acls': 'ACLSLoss',
           'svls': 'SVLSLoss', 'nacl': 'NACLLoss', 'rankmixup-mrl': 'CrossEntropyLoss',
           'rankmixup-mndcg': 'CrossEntropyLoss', 'gamma-net': 'SampleWiseFocalLoss'}
SEGMENTORS = {'rankmixup-mrl': 'RankMixupEncoderDecoder', 'rankmixup-mndcg': 'RankMixupEncoderDecoder',
              'gamma-net': 'GammaNetEncoderDecoder'}


def method_of(path: str) -> str:
    return osp.basename(path)[len('deeplabv3plus_r50-d8_'):-len(SUFFIX)]


def test_every_training_method_has_a_cityscapes_config():
    assert sorted(method_of(p) for p in CONFIGS) == sorted(METHODS)


@pytest.mark.parametrize('path', CONFIGS, ids=method_of)
def test_cityscapes_config_builds(path):
    cfg = Config.fromfile(path)
    method = method_of(path)
    assert cfg.custom_imports == dict(imports=['calibseg'], allow_failed_imports=False)
    # mmseg's Cityscapes dataset base, 512x1024 crops, the 80k schedule, 4 GPUs x 2 images
    dataset = cfg.train_dataloader.dataset
    dataset = dataset.get('dataset', dataset)  # γ-Net: HeldOutSplit around it
    assert dataset.type == 'CityscapesDataset' and cfg.val_dataloader.dataset.type == 'CityscapesDataset'
    assert dataset.data_prefix == dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train')
    assert cfg.crop_size == (512, 1024) and cfg.model.data_preprocessor.size == (512, 1024)
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 2
    assert cfg.model.backbone.depth == 50 and cfg.model.decode_head.num_classes == 19
    assert cfg.model.type == SEGMENTORS.get(method, 'EncoderDecoder')
    evaluators = {e['type']: e for e in cfg.val_evaluator}
    assert set(evaluators) == {'IoUMetric', 'PixelCalibrationMetric'}
    assert evaluators['PixelCalibrationMetric']['boundary_width'] == 2
    for e in cfg.val_evaluator:
        METRICS.build(e)
    # tests/test_configs.py builds every config's segmentor (ResNet-50 builds take seconds each on CPU, so they are
    # not repeated here); this test builds the decode head's loss and checks the segmentor settings.
    init_default_scope('mmseg')
    loss = MODELS.build(cfg.model.decode_head.loss_decode)
    assert type(loss).__name__ == METHODS[method]
    assert cfg.model.auxiliary_head.loss_decode == dict(type='CrossEntropyLoss', use_sigmoid=False,
                                                          loss_weight=0.4)
    if method.startswith('rankmixup'):
        assert cfg.model.rankmixup['mode'] == method.split('-')[1]
        assert cfg.model_wrapper_cfg == dict(type='TrainStepDelegatingDDP')
    if method == 'gamma-net':
        assert cfg.model.meta.dataloader.dataset.dataset == dataset  # the meta split comes from the train set
        assert cfg.model.meta.dataloader.dataset.part == 'held_out' and cfg.train_dataloader.dataset.part == 'train'
        assert cfg.model_wrapper_cfg == dict(type='TrainStepDelegatingDDP')


def cpu_options(cfg: Config, data_root: str, work_dir: str) -> dict:
    """Options that run a Cityscapes config on the generated layout on CPU: BN, no pretrained weights, 64 px crops
    of 64x128 images, two iterations of batch 2, no checkpoint."""
    options = {'model.pretrained': None, 'work_dir': work_dir, 'model.data_preprocessor.size': (64, 64),
               'train_cfg.max_iters': 2, 'train_cfg.val_interval': 1000, 'default_hooks.checkpoint': None,
               'default_hooks.logger.interval': 1}
    for part in ('backbone', 'decode_head', 'auxiliary_head'):
        options[f'model.{part}.norm_cfg'] = dict(type='BN', requires_grad=True)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options.update({f'{loader}.num_workers': 0, f'{loader}.persistent_workers': False,
                        f'{loader}.dataset.data_root': data_root})
    for i, step in enumerate(cfg.train_dataloader.dataset.pipeline):
        if step.type == 'RandomResize':
            options[f'train_dataloader.dataset.pipeline.{i}.scale'] = (128, 64)
        if step.type == 'RandomCrop':
            options[f'train_dataloader.dataset.pipeline.{i}.crop_size'] = (64, 64)
    for loader in ('val_dataloader', 'test_dataloader'):
        for i, step in enumerate(cfg[loader].dataset.pipeline):
            if step.type == 'Resize':
                options[f'{loader}.dataset.pipeline.{i}.scale'] = (128, 64)
    return options


def test_svls_cityscapes_trains_and_validates_on_generated_layout(tmp_path):
    generate_cityscapes(str(tmp_path), num_train=4, num_val=2)
    path = osp.join(ROOT, 'configs', 'svls', 'deeplabv3plus_r50-d8_svls' + SUFFIX)
    cfg = Config.fromfile(path)
    cfg = load_run_config(cfg, cfg_options=cpu_options(cfg, str(tmp_path / 'cityscapes'), str(tmp_path / 'work')))
    assert 'SyncBN' not in str(cfg.model)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2 and type(runner.model.decode_head.loss_decode).__name__ == 'SVLSLoss'
    losses = runner.message_hub.get_scalar('train/decode.loss_svls').data[0]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    metrics = runner.val()
    assert 'mIoU' in metrics and math.isfinite(metrics['ECE'])
    assert any('boundary' in key.lower() for key in metrics), sorted(metrics)
