"""ASLPHook: table keys from the training set, the held-out accuracy, the epoch summary, refused set-ups."""
from __future__ import annotations

import json
import logging
import os.path as osp
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
from calibseg_testing import one_conv_backbone
from mmengine.config import ConfigDict
from mmengine.logging import MMLogger
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import init_default_scope
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.structures import PixelData
from mmengine.visualization import Visualizer
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

import calibseg  # noqa: F401
from calibseg.engine.hooks import ASLPHook
from calibseg.engine.hooks.aslp_hook import alpha_summary, draw_alpha_histogram

SIZE = 4


def _model(bias: float):
    """A model whose every logit is ``bias`` (zero weights): it predicts all foreground for bias > 0."""
    init_default_scope('mmseg')
    head = dict(type='FCNHead', in_channels=4, channels=4, num_convs=1, concat_input=False, in_index=0,
                dropout_ratio=0.0, norm_cfg=None, num_classes=2, out_channels=1, threshold=0.5,
                loss_decode=dict(type='SCBCELoss', beta=2.0, alpha=None, seed=0))
    model = MODELS.build(dict(type='ASLPEncoderDecoder', backbone=dict(type=one_conv_backbone()),
                              decode_head=head, update_from_epoch=2, test_cfg=ConfigDict(mode='whole'),
                              data_preprocessor=dict(type='SegDataPreProcessor', size=(SIZE, SIZE))))
    nn.init.zeros_(model.decode_head.conv_seg.weight)
    nn.init.constant_(model.decode_head.conv_seg.bias, bias)
    return model


class _Images:
    """A minimal dataset: ``get_data_info`` and packed samples with the given labels."""

    metainfo = dict(classes=('background', 'foreground'))

    def __init__(self, labels):
        self.items = list(labels.items())

    def __len__(self):
        return len(self.items)

    def get_data_info(self, i):
        return dict(img_path=self.items[i][0])

    def __getitem__(self, i):
        path, label = self.items[i]
        sample = SegDataSample(gt_sem_seg=PixelData(data=label[None].clone()))
        sample.set_metainfo(dict(img_path=path, img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE)))
        return dict(inputs=torch.zeros(3, SIZE, SIZE, dtype=torch.uint8), data_samples=sample)


TRAIN = _Images({f'/d/tr/{n}.jpg': torch.zeros(SIZE, SIZE, dtype=torch.long) for n in 'abc'})
HELD = _Images({
    '/d/tr/h1.jpg': torch.tensor([[1, 1, 0, 0]] * 4),  # 8 of 16 foreground
    '/d/tr/h2.jpg': torch.tensor([[1, 1, 1, 255]] * 4),  # 12 of 12 labelled pixels foreground
})


def _runner(model, tmp_path, *, epoch=0, loop=EpochBasedTrainLoop, wrapper=None, name='aslp_hook_test'):
    loop_object = object.__new__(loop)
    visualizer = Visualizer(name=f'{name}_{epoch}', vis_backends=[dict(type='LocalVisBackend')],
                            save_dir=str(tmp_path / 'vis'))
    return SimpleNamespace(model=wrapper or model, train_dataloader=SimpleNamespace(dataset=TRAIN),
                           train_loop=loop_object, cfg=dict(), epoch=epoch, work_dir=str(tmp_path),
                           logger=MMLogger.get_instance('aslp_hook_test', log_level=logging.INFO),
                           visualizer=visualizer)


def test_held_out_accuracy_summary_histogram_and_dump(tmp_path, caplog):
    model = _model(bias=3.0)  # predicts foreground everywhere
    hook = ASLPHook(dataloader=dict(dataset=HELD, batch_size=2), dump_table=True)
    runner = _runner(model, tmp_path)
    hook.before_train(runner)
    assert model.aslp_keys == ['a.jpg', 'b.jpg', 'c.jpg'] and model.aslp_alpha.tolist() == [0.0, 0.0, 0.0]
    # pooled over labelled pixels: (8 + 12) correct of (16 + 12)
    assert hook.measure_accuracy(runner) == pytest.approx(20 / 28)
    assert model.training  # measuring switched the model back

    hook.before_train_epoch(runner)  # epoch 1 of update_from_epoch=2: warm-up, nothing measured yet
    assert not model.aslp_updating and torch.isnan(model.aslp_acc_val)
    model.aslp_alpha.copy_(torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64))
    hook.after_train_epoch(runner)
    assert model.aslp_acc_val.item() == pytest.approx(20 / 28)
    record = json.loads((tmp_path / 'aslp' / 'alpha_epoch1_rank0.json').read_text())
    assert record['alpha'] == [0.0, 0.1, 0.2] and record['keys'] == ['a.jpg', 'b.jpg', 'c.jpg']
    assert record['acc_val'] == pytest.approx(20 / 28)
    vis = tmp_path / 'vis' / 'vis_data'
    scalars = [json.loads(line) for line in (vis / 'scalars.json').read_text().splitlines()]
    assert scalars[-1]['aslp/alpha_mean'] == pytest.approx(0.1) and scalars[-1]['step'] == 1
    assert scalars[-1]['aslp/alpha_q50'] == pytest.approx(0.1) and scalars[-1]['aslp/alpha_q100'] == 0.2
    assert osp.getsize(vis / 'vis_image' / 'aslp_alpha_histogram_1.png') > 1000

    runner.epoch = 1
    hook.before_train_epoch(runner)
    assert model.aslp_updating


def test_first_epoch_updates_measure_before_training(tmp_path):
    model = _model(bias=-3.0)  # predicts background everywhere: 8 correct of 28
    model.update_from_epoch = 1
    hook = ASLPHook(dataloader=dict(dataset=HELD))
    runner = _runner(model, tmp_path, name='first_epoch')
    hook.before_train(runner)
    hook.before_train_epoch(runner)
    assert model.aslp_updating and model.aslp_acc_val.item() == pytest.approx(8 / 28)


def test_config_key_and_refused_set_ups(tmp_path):
    model = _model(bias=1.0)
    runner = _runner(model, tmp_path, name='refused')
    with pytest.raises(ValueError, match="no top-level 'aslp_val_dataloader'"):
        ASLPHook().before_train(runner)
    runner.cfg = dict(my_loader=dict(dataset=HELD))
    ASLPHook(dataloader='my_loader').before_train(runner)
    with pytest.raises(ValueError, match='also training images'):
        ASLPHook(dataloader=dict(dataset=TRAIN)).before_train(runner)
    with pytest.raises(ValueError, match='EpochBasedTrainLoop'):
        ASLPHook(dataloader=dict(dataset=HELD)).before_train(_runner(model, tmp_path, loop=IterBasedTrainLoop))
    with pytest.raises(TypeError, match='ASLPEncoderDecoder'):
        ASLPHook(dataloader=dict(dataset=HELD)).before_train(_runner(nn.Linear(1, 1), tmp_path, name='linear'))
    with pytest.raises(ValueError, match='unknown key'):
        ASLPHook(dataloader=dict(dataset=HELD, sampler=dict(type='DefaultSampler')))
    with pytest.raises(ValueError, match='histogram_bins'):
        ASLPHook(histogram_bins=0)


def test_plain_ddp_wrapper_is_refused(tmp_path):
    if dist.is_initialized():
        pytest.skip('a process group already exists')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    try:
        model = _model(bias=1.0)
        wrapper = MMDistributedDataParallel(module=model, device_ids=None)
        with pytest.raises(ValueError, match='TrainStepDelegatingDDP'):
            ASLPHook(dataloader=dict(dataset=HELD)).before_train(_runner(model, tmp_path, wrapper=wrapper))
    finally:
        dist.destroy_process_group()


def test_summary_and_histogram_helpers():
    values = torch.tensor([0.0, 0.01, 0.02, 0.05, 0.2], dtype=torch.float64)
    summary = alpha_summary(values)
    np.testing.assert_allclose([summary[k] for k in ('q0', 'q25', 'q50', 'q75', 'q100')],
                               np.quantile(values.numpy(), [0, 0.25, 0.5, 0.75, 1.0]))
    assert summary['mean'] == pytest.approx(0.056) and summary['nonzero'] == pytest.approx(0.8)
    image = draw_alpha_histogram(values, alpha_max=0.24, bins=10, title='t')
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
