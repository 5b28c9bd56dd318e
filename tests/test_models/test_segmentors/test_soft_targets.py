"""Soft saliency targets in training: stacking, head checks, SoftTargetEncoderDecoder and ASLPEncoderDecoder with
soft targets against hand-computed values, and 2-iteration trainings of the soft demo configs on a tiny DUTS."""
import math
import os.path as osp

import pytest
import torch
from calibseg_testing import ROOT, one_conv_backbone
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.structures import PixelData
from mmseg.registry import HOOKS, MODELS
from mmseg.structures import SegDataSample
from torch import nn

import calibseg  # noqa: F401  (registers the segmentors, losses and transforms)
from calibseg.models.segmentors import ASLPEncoderDecoder, SoftTargetEncoderDecoder
from calibseg.models.segmentors.soft_targets import check_soft_target_head, stack_soft_targets

SIZE = 4
BIAS = 2.0  # zero head weights: every pixel's logit is this bias, so the losses are known by hand
IGNORE = 255


def _head(loss, out_channels=1):
    return dict(type='FCNHead', in_channels=4, channels=4, num_convs=1, concat_input=False, in_index=0,
                dropout_ratio=0.0, norm_cfg=None, num_classes=2, out_channels=out_channels, threshold=0.5,
                loss_decode=loss)


SCBCE = dict(type='SCBCELoss', beta=2.0, alpha=0.1, expected=True)
BCE = dict(type='SCBCELoss', alpha=0.0, expected=True, loss_weight=0.4, loss_name='loss_bce')


def _model(type_='SoftTargetEncoderDecoder', loss=SCBCE, aux=BCE, **options):
    init_default_scope('mmseg')
    cfg = dict(type=type_, backbone=dict(type=one_conv_backbone()), decode_head=_head(loss),
               data_preprocessor=dict(type='SegDataPreProcessor', size=(SIZE, SIZE)), **options)
    if aux is not None:
        cfg['auxiliary_head'] = _head(aux)
    model = MODELS.build(cfg)
    for head in [model.decode_head] + ([model.auxiliary_head] if aux is not None else []):
        nn.init.zeros_(head.conv_seg.weight)
        nn.init.constant_(head.conv_seg.bias, BIAS)
    return model


# two images of 3x4 pixels (padded to 4x4 by the data preprocessor: the last row is ignored)
LABELS = [torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 255, 0, 0]]), torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1],
                                                                                    [0, 0, 0, 1]])]
# soft masks whose means differ from the labels' (a constant logit's BCE depends on the mean target only)
SOFTS = [torch.tensor([[0.9, 1.0, 0.6, 0.0], [0.6, 0.8, 0.1, 0.4], [0.7, 0.5, 0.0, 0.3]]),
         torch.tensor([[0.0, 0.1, 0.3, 0.2], [0.9, 1.0, 0.95, 0.7], [0.2, 0.0, 0.45, 0.6]])]
PATHS = ['/data/DUTS/DUTS-TR/DUTS-TR-Image/a.jpg', '/data/DUTS/DUTS-TR/DUTS-TR-Image/b.jpg']


def _batch(soft=True):
    samples = []
    for label, value, path in zip(LABELS, SOFTS, PATHS):
        sample = SegDataSample(gt_sem_seg=PixelData(data=label[None].clone()))
        if soft:
            sample.gt_soft_mask = PixelData(data=value[None].clone())
        sample.set_metainfo(dict(img_path=path, img_shape=(3, SIZE), ori_shape=(3, SIZE)))
        samples.append(sample)
    inputs = [torch.full((3, 3, SIZE), 10 * i, dtype=torch.uint8) for i in range(len(samples))]
    return dict(inputs=inputs, data_samples=samples)


def _softplus(x):
    return math.log1p(math.exp(x))


def _hand_bce(targets):
    """Mean over the non-ignored pixels of softplus(b) - t b, for per-pixel targets t."""
    values = [_softplus(BIAS) - t * BIAS for label, soft in zip(LABELS, targets)
              for y, t in zip(label.flatten().tolist(), soft.flatten().tolist()) if y != IGNORE]
    return sum(values) / len(values)


def _losses(model, batch):
    data = model.data_preprocessor(batch, True)
    return model(**data, mode='loss')


def test_stack_soft_targets_pads_like_the_labels_and_names_missing_masks():
    samples = _batch()['data_samples']
    stacked = stack_soft_targets(samples, (5, 6), torch.device('cpu'))
    assert stacked.shape == (2, 5, 6) and stacked.dtype == torch.float32
    for i, soft in enumerate(SOFTS):
        assert torch.equal(stacked[i, :3, :4], soft)
    assert float(stacked[:, 3:].abs().sum() + stacked[:, :, 4:].abs().sum()) == 0.0
    with pytest.raises(ValueError, match=r'within the labels \(2, 6\)'):
        stack_soft_targets(samples, (2, 6), torch.device('cpu'))
    with pytest.raises(ValueError, match=r'a\.jpg has no gt_soft_mask.*soft=True.*PackSaliencyInputs'):
        stack_soft_targets(_batch(soft=False)['data_samples'], (5, 6), torch.device('cpu'))


def test_soft_target_encoder_decoder_losses_by_hand():
    model = _model()
    assert isinstance(model, SoftTargetEncoderDecoder) and model.soft_targets
    losses = _losses(model, _batch())
    eps = 2 * 0.1 * 2.0  # expected SC-BCE: label smoothing of the soft target, (1 - eps) s + eps / 2
    smoothed = [(1 - eps) * s + eps / 2 for s in SOFTS]
    assert losses['decode.loss_scbce'].item() == pytest.approx(_hand_bce(smoothed), rel=1e-6)
    assert losses['aux.loss_bce'].item() == pytest.approx(0.4 * _hand_bce(SOFTS), rel=1e-6)
    # sigmoid(2) > 0.5: everything is predicted foreground; accuracy on the binarised labels
    labels = [y for label in LABELS for y in label.flatten().tolist() if y != IGNORE]
    for prefix in ('decode', 'aux'):
        assert losses[f'{prefix}.acc_seg'].item() == pytest.approx(100 * labels.count(1) / len(labels))
    # binarised training of the same model differs (the soft values are what the losses see)
    hard = [label.float() for label in LABELS]
    assert _hand_bce([(1 - eps) * h + eps / 2 for h in hard]) != pytest.approx(_hand_bce(smoothed), rel=1e-2)


def test_soft_target_gradient_reaches_the_head():
    """d/db of mean(softplus(b) - s b) is mean(sigmoid(b) - s): the gradient of the bias sees the soft values."""
    model = _model(aux=None, loss=dict(type='SCBCELoss', alpha=0.0, expected=True))
    losses = _losses(model, _batch())
    losses['decode.loss_scbce'].backward()
    values = [s for label, soft in zip(LABELS, SOFTS) for y, s in zip(label.flatten().tolist(), soft.flatten().tolist())
              if y != IGNORE]
    expected = 1 / (1 + math.exp(-BIAS)) - sum(values) / len(values)
    assert model.decode_head.conv_seg.bias.grad.item() == pytest.approx(expected, rel=1e-5)


def test_missing_soft_masks_and_unfit_heads_raise_clearly():
    model = _model()
    with pytest.raises(ValueError, match='PackSaliencyInputs'):
        _losses(model, _batch(soft=False))
    ce = dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.4)
    with pytest.raises(ValueError, match=r'auxiliary head aux: CrossEntropyLoss \(loss_ce\) cannot take soft targets'
                                         r'.*SCBCELoss'):
        _model(aux=ce)
    with pytest.raises(ValueError, match=r'decode head: LabelSmoothingLoss .*cannot take soft targets'):
        _model(loss=dict(type='LabelSmoothingLoss'), aux=None)
    with pytest.raises(ValueError, match=r'one-channel .*out_channels=2'):
        init_default_scope('mmseg')
        check_soft_target_head(MODELS.build(_head(dict(type='LabelSmoothingLoss'), out_channels=2)), 'here')
    with pytest.raises(ValueError, match='soft_targets must be a bool'):
        _model('ASLPEncoderDecoder', loss=dict(type='SCBCELoss', alpha=None, seed=0), aux=None, soft_targets='yes')
    with pytest.raises(ValueError, match=r'ASLPEncoderDecoder \(soft targets\): the auxiliary head aux: '
                                         r'CrossEntropyLoss'):
        _model('ASLPEncoderDecoder', loss=dict(type='SCBCELoss', alpha=None, seed=0), aux=ce, soft_targets=True)
    plain = _model('ASLPEncoderDecoder', loss=dict(type='SCBCELoss', alpha=None, seed=0), aux=ce)
    assert not plain.soft_targets  # binarised by default: any loss goes


def test_aslp_with_soft_targets_uses_them_in_loss_and_statistics():
    loss = dict(type='SCBCELoss', beta=2.0, alpha=None, seed=0)
    model = _model('ASLPEncoderDecoder', loss=loss, soft_targets=True)
    assert isinstance(model, ASLPEncoderDecoder)
    model.aslp_init_table(PATHS)
    model.aslp_alpha.copy_(torch.tensor([0.0, 0.0], dtype=torch.float64))  # alpha 0: no draw perturbs anything
    losses = _losses(model, _batch())
    assert losses['decode.loss_scbce'].item() == pytest.approx(_hand_bce(SOFTS), rel=1e-6)
    assert losses['aux.loss_bce'].item() == pytest.approx(0.4 * _hand_bce(SOFTS), rel=1e-6)
    index, bce, cal, valid = model._aslp_batch
    assert index.tolist() == [0, 1] and valid.tolist() == [True, True]
    for i, (label, soft) in enumerate(zip(LABELS, SOFTS)):
        keep = label != IGNORE
        by_hand = sum(_softplus(BIAS) - s * BIAS for s in soft[keep].tolist()) / int(keep.sum())
        assert bce[i].item() == pytest.approx(by_hand, rel=1e-6)
        assert cal[i].item() == pytest.approx(_softplus(BIAS) + _softplus(-BIAS), rel=1e-6)
    # the default (binarised) ASLP takes the labels in both places
    hard = _model('ASLPEncoderDecoder', loss=loss)
    hard.aslp_init_table(PATHS)
    hard_losses = _losses(hard, _batch(soft=False))
    assert hard_losses['decode.loss_scbce'].item() == pytest.approx(_hand_bce([lb.float() for lb in LABELS]),
                                                                    rel=1e-6)


# ------------------------------------------------------------------------------------- tiny trainings
SOFT_CONFIGS = {
    'aslp': osp.join(ROOT, 'configs', 'saliency', 'fcn_r18-d16_aslp-soft_1xb8-30ep_demo-duts-96x96.py'),
    'scbce': osp.join(ROOT, 'configs', 'saliency', 'fcn_r18-d16_scbce-soft_1xb8-30ep_demo-duts-96x96.py'),
}


@HOOKS.register_module(name='_SoftTargetSpyHook', force=True)
class _SpyHook(Hook):
    """Records, for every training batch, whether each sample carried a soft mask and whether any value was soft."""

    seen: list = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        samples = data_batch['data_samples']
        soft = [s.gt_soft_mask.data for s in samples if 'gt_soft_mask' in s]
        _SpyHook.seen.append((len(soft) == len(samples), any(bool(((v > 0) & (v < 1)).any()) for v in soft)))

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        _SpyHook.seen.append(('val', any('gt_soft_mask' in s for s in data_batch['data_samples'])))


@pytest.fixture(scope='module')
def tiny_duts(tmp_path_factory, demo_generator):
    root = tmp_path_factory.mktemp('tiny_duts_soft')
    demo_generator.generate_duts(str(root), num_train=6, num_test=2, size=32, seed=0)
    return str(root / 'DUTS')


@pytest.mark.parametrize('method', sorted(SOFT_CONFIGS))
def test_two_iterations_of_the_soft_demo_config(tiny_duts, tmp_path, method):
    cfg = Config.fromfile(SOFT_CONFIGS[method])
    cfg.merge_from_dict({
        'train_dataloader.batch_size': 2,
        'train_dataloader.dataset.held_out': 2,  # 4 trained on: 2 iterations of batch 2
        'train_dataloader.dataset.dataset.data_root': tiny_duts,
        'aslp_val_dataloader.dataset.held_out': 2,
        'aslp_val_dataloader.dataset.dataset.data_root': tiny_duts,
        'val_dataloader.dataset.data_root': tiny_duts,
        'model.data_preprocessor.size': (32, 32),
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1,
    })
    cfg.test_dataloader = cfg.val_dataloader
    if method == 'aslp':
        cfg.model.update_from_epoch = 1  # the update (with the soft BCE_i) runs on both steps
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='_SoftTargetSpyHook')]
    cfg.work_dir = str(tmp_path / method)
    cfg.experiment_name = f'soft_{method}_{tmp_path.name}'
    _SpyHook.seen = []
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    train_seen = [s for s in _SpyHook.seen if s[0] != 'val']
    assert train_seen == [(True, True), (True, True)]  # every training sample carried a soft (non-binary) mask
    assert ('val', False) in _SpyHook.seen and ('val', True) not in _SpyHook.seen  # evaluation: binarised only
    model = runner.model
    assert model.soft_targets
    if method == 'aslp':  # both steps updated the table (the update logs the batch's mean alpha)
        assert int(model.aslp_steps) == 2 and 'train/aslp_alpha_batch' in runner.message_hub.log_scalars
        assert bool(((model.aslp_alpha >= 0) & (model.aslp_alpha <= model.alpha_max)).all())
    assert osp.isfile(osp.join(cfg.work_dir, 'epoch_1.pth'))
