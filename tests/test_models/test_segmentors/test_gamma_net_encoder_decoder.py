"""GammaNetEncoderDecoder: the hypergradient against finite differences, one training step, checkpoints, bad configs."""
from __future__ import annotations

import copy
import os.path as osp

import pytest
import torch
from calibseg_testing import ROOT
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.models.decode_heads import FCNHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import calibseg  # noqa: F401
from calibseg.functional.losses import softmax_focal_loss
from calibseg.models.segmentors import GammaNetEncoderDecoder
from calibseg.models.utils import GammaNet

IGNORE = 255
NUM_CLASSES = 3
SIZE = 16
DEMO = osp.join(ROOT, 'configs', 'gamma_net', 'fcn_r18-d16_gamma-net_1xb8-600it_demo-voc12aug-96x96.py')


def _voc(root: str = 'unused') -> dict:
    return dict(type='PascalVOCDataset', data_root=root, data_prefix=dict(img_path='JPEGImages',
                seg_map_path='SegmentationClassAug'), ann_file='ImageSets/Segmentation/aug.txt',
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                          dict(type='PackSegInputs')])


def _meta_loader(root: str = 'unused', held_out: int = 3, batch_size: int = 2) -> dict:
    return dict(batch_size=batch_size, num_workers=0,
                dataset=dict(type='HeldOutSplit', part='held_out', held_out=held_out, seed=0, dataset=_voc(root)))


def _cfg(per: str = 'pixel', size: int = SIZE, num_classes: int = NUM_CLASSES, **meta) -> dict:
    """A tiny ResNet-18 (8 base channels, output stride 8) with an FCN head and an auxiliary head."""
    norm = dict(type='BN', requires_grad=True)
    return dict(
        type='GammaNetEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[64.0] * 3, size=(size, size),
                               pad_val=0, seg_pad_val=IGNORE),
        backbone=dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8, out_indices=(0, 1, 2, 3),
                      dilations=(1, 1, 1, 1), strides=(1, 2, 1, 1), norm_cfg=norm),
        decode_head=dict(type='FCNHead', in_channels=64, in_index=3, channels=8, num_convs=1, concat_input=False,
                         dropout_ratio=0.0, num_classes=num_classes, norm_cfg=norm, align_corners=False,
                         loss_decode=dict(type='SampleWiseFocalLoss')),
        auxiliary_head=dict(type='FCNHead', in_channels=32, in_index=2, channels=4, num_convs=1, concat_input=False,
                            dropout_ratio=0.0, num_classes=num_classes, norm_cfg=norm, align_corners=False,
                            loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4, avg_non_ignore=True)),
        gamma_net=dict(per=per, hidden=4),
        meta=dict(dict(dataloader=_meta_loader(), lr_lookahead=2.0), **meta))


def _build(cfg: dict) -> GammaNetEncoderDecoder:
    init_default_scope('mmseg')
    torch.manual_seed(0)
    return MODELS.build(copy.deepcopy(cfg)).train()


def _batch(n: int = 2, seed: int = 0, size: int = SIZE, num_classes: int = NUM_CLASSES) -> dict:
    gen = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(n):
        label = torch.randint(0, num_classes, (1, size, size), generator=gen)
        label[:, :2] = IGNORE
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=label)
        # images that carry their labels (plus noise), so that features and classes are related
        image = (label.clamp(max=3) * 60 + torch.randint(0, 60, (3, size, size), generator=gen))
        inputs.append(image.clamp(0, 255).to(torch.uint8))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _randomise(gamma_net: GammaNet, seed: int = 1) -> None:
    """Random weights everywhere (the zero-initialised last layer would give zero first-layer gradients)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in gamma_net.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * 0.5)


# ------------------------------------------------------------------------------------------------ γ-Net
@pytest.mark.parametrize('per', ['pixel', 'image'])
def test_gamma_map_at_label_resolution(per):
    model = _build(_cfg(per))
    _randomise(model.gamma_net)
    data = model.data_preprocessor(_batch(), True)
    features = model.classifier_features(data['inputs'])
    assert features.shape == (2, 8, SIZE // 8, SIZE // 8)
    gamma = model._gamma_map(features, torch.Size((2, SIZE, SIZE)))
    if per == 'pixel':
        assert gamma.shape == (2, SIZE, SIZE)
        expected = resize(model.gamma_net(features), size=(SIZE, SIZE), mode='bilinear', align_corners=False)
        torch.testing.assert_close(gamma, expected.squeeze(1))
    else:
        assert gamma.shape == (2, 1, 1)
        torch.testing.assert_close(gamma.reshape(-1), model.gamma_net(features).reshape(-1))


def test_decode_loss_is_focal_with_gamma_nets_gamma():
    """Step (d): the head's loss is the sample-wise focal loss with γ-Net's γ of this forward's features."""
    model = _build(_cfg('pixel'))
    _randomise(model.gamma_net)
    data = model.data_preprocessor(_batch(), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    feats = model.extract_feat(data['inputs'])
    seg_logits, features = model._head_forward(feats)
    labels = torch.stack([s.gt_sem_seg.data for s in data['data_samples']]).squeeze(1)
    gamma = resize(model.gamma_net(features), size=(SIZE, SIZE), mode='bilinear', align_corners=False).squeeze(1)
    logits = resize(seg_logits, size=(SIZE, SIZE), mode='bilinear', align_corners=False)
    expected = softmax_focal_loss(logits, labels, gamma=gamma.detach())
    torch.testing.assert_close(losses['decode.loss_focal'], expected)
    valid = labels != IGNORE
    torch.testing.assert_close(losses['gamma_mean'], gamma.detach()[valid].mean())
    assert float(losses['gamma_std']) > 0
    # the network's loss carries no gradient into γ-Net (its γ is detached in step (d))
    losses['decode.loss_focal'].backward()
    assert all(p.grad is None for p in model.gamma_net.parameters())
    assert model.decode_head.conv_seg.weight.grad is not None


# ------------------------------------------------------------------------------------------ hypergradient
@pytest.mark.parametrize('per, objective', [('pixel', 'ce+sece'), ('image', 'ce+sece'), ('pixel', 'sece')])
def test_hypergradient_matches_central_finite_differences(per, objective):
    model = _build(_cfg(per, objective=objective)).double()
    _randomise(model.gamma_net)
    train = model.data_preprocessor(_batch(seed=0), True)
    meta = model.data_preprocessor(_batch(seed=1), True)
    assert train['inputs'].dtype == torch.float64
    params = list(model.gamma_net.parameters())
    objective, logs = model.meta_objective(train, meta, lr=2.0)
    grads = torch.autograd.grad(objective, params)
    assert float(logs['meta_sece']) > 0 and float(logs['meta_ce']) > 0
    eps = 1e-6
    checked = 0
    for param, grad in zip(params, grads):
        flat, gflat = param.data.view(-1), grad.reshape(-1)
        for index in range(min(flat.numel(), 6)):  # every entry of the small tensors, 6 of the first layer
            original = float(flat[index])
            values = []
            for shifted in (original + eps, original - eps):
                with torch.no_grad():
                    flat[index] = shifted
                values.append(float(model.meta_objective(train, meta, lr=2.0)[0].detach()))
            with torch.no_grad():
                flat[index] = original
            plus, minus = values
            numeric = (plus - minus) / (2 * eps)
            assert float(gflat[index]) == pytest.approx(numeric, rel=1e-5, abs=1e-9), (param.shape, index)
            checked += 1
    assert checked >= 12
    assert max(float(g.abs().max()) for g in grads) > 1e-6  # a real, non-zero hypergradient
    # without the look-ahead (lr=0) the meta objective does not depend on γ-Net at all
    objective0, _ = model.meta_objective(train, meta, lr=0.0)
    grads0 = torch.autograd.grad(objective0, params, allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads0)


def test_look_ahead_leaves_batchnorm_statistics_alone():
    model = _build(_cfg())
    before = {k: v.clone() for k, v in model.state_dict().items() if 'running' in k or 'num_batches' in k}
    data = model.data_preprocessor(_batch(), True)
    model.meta_objective(data, data, lr=1.0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.loss(data['inputs'], data['data_samples'])  # a real forward does move them
    assert not torch.equal(before['backbone.stem.1.running_mean'], model.state_dict()['backbone.stem.1.running_mean'])


# ------------------------------------------------------------------------------------ train step, checkpoints
def test_train_step_updates_network_and_gamma_net_and_checkpoints_the_meta_state(tiny_voc):
    cfg = _cfg(size=32, num_classes=21, lr_lookahead=None, check_sync=True)
    cfg['meta']['dataloader'] = _meta_loader(tiny_voc, held_out=3, batch_size=2)
    model = _build(cfg)
    # mmengine's default constructor hands every parameter, γ-Net's included, to the network optimiser
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    assert model._lookahead_lr(optim) == 0.05
    net_before = {k: v.detach().clone() for k, v in model.named_parameters() if not k.startswith('gamma_net')}
    gamma_before = [p.detach().clone() for p in model.gamma_net.parameters()]
    logs = model.train_step(_batch(seed=3, size=32, num_classes=21), optim)
    assert set(logs) >= {'loss', 'decode.loss_focal', 'aux.loss_ce', 'gamma_mean', 'gamma_std', 'meta_ce',
                         'meta_sece', 'meta_objective', 'gamma_net_rank_diff', 'delegated_steps'}
    assert 0 < float(logs['gamma_mean']) < 5 and float(logs['gamma_net_rank_diff']) == 0
    assert float(logs['delegated_steps']) == 0  # single process: no DDP wrapper delegated the step
    changed = [k for k, v in model.named_parameters() if k in net_before and not torch.equal(v, net_before[k])]
    assert 'decode_head.conv_seg.weight' in changed and 'backbone.stem.0.weight' in changed
    # γ-Net moved by its own Adam step (lr 1e-3: a first Adam step moves no entry by more than lr) ...
    for param, before in zip(model.gamma_net.parameters(), gamma_before):
        delta = (param.detach() - before).abs()
        assert float(delta.max()) <= 1e-3 * (1 + 1e-5)
    assert float((model.gamma_net.layers[-1].weight.detach() - gamma_before[2]).abs().min()) > 0
    # ... and never by the network's SGD: no momentum state, no gradient left behind
    gamma_params = set(model.gamma_net.parameters())
    assert not any(p in gamma_params for p in optim.optimizer.state)
    assert all(p.grad is None for p in gamma_params)
    assert all(int(s['step']) == 1 for s in model.meta_optimizer.state.values())
    assert model.meta_batches.consumed == 1
    model.train_step(_batch(seed=4, size=32, num_classes=21), optim)

    state = model.state_dict()
    assert {'gamma_net.layers.0.weight', 'gamma_net.layers.2.bias', 'meta_batches_seen'} <= set(state)
    assert {f'meta_optimizer_state.{i}.{name}' for i in range(4) for name in ('step', 'exp_avg', 'exp_avg_sq')} \
        <= set(state)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # mmengine broadcasts every entry
    assert int(state['meta_batches_seen']) == 2
    fresh = _build(cfg)
    assert not torch.equal(fresh.gamma_net.layers[-1].weight, model.gamma_net.layers[-1].weight)
    fresh.load_state_dict(copy.deepcopy(state))
    for a, b in zip(fresh.gamma_net.parameters(), model.gamma_net.parameters()):
        assert torch.equal(a, b)
    saved, loaded = model.meta_optimizer.state_dict(), fresh.meta_optimizer.state_dict()
    assert saved['param_groups'] == loaded['param_groups']
    for key, entry in saved['state'].items():
        assert int(loaded['state'][key]['step']) == 2
        assert torch.equal(entry['exp_avg'], loaded['state'][key]['exp_avg'])
        assert torch.equal(entry['exp_avg_sq'], loaded['state'][key]['exp_avg_sq'])
    assert int(fresh.meta_batches_seen) == 2  # the stream continues from there at the next step


def test_lookahead_lr_follows_the_classifiers_param_group():
    model = _build(_cfg(lr_lookahead=None))
    head = list(model.decode_head.parameters())
    others = [p for n, p in model.named_parameters() if not n.startswith('decode_head')]
    optim = OptimWrapper(torch.optim.SGD([dict(params=others), dict(params=head, lr=0.3)], lr=0.01))
    assert model._lookahead_lr(optim) == 0.3
    without = OptimWrapper(torch.optim.SGD(others, lr=0.01))
    with pytest.raises(RuntimeError, match='lr_lookahead'):
        model._lookahead_lr(without)
    assert _build(_cfg(lr_lookahead=0.7))._lookahead_lr(without) == 0.7


def test_gamma_net_is_kept_out_of_ddp():
    model = _build(_cfg())
    assert sorted(model.ddp_ignored_parameter_names()) == sorted(
        f'gamma_net.{n}' for n, _ in model.gamma_net.named_parameters())


# ------------------------------------------------------------------------------------------- bad configs
@MODELS.register_module(name='_GammaNetTestHeadOwnClassifier', force=True)
class _HeadOwnClassifier(FCNHead):
    """A head whose classifier is not conv_seg's plain output path (cls_seg overridden)."""

    def cls_seg(self, feat):
        return self.conv_seg(feat).tanh()


@MODELS.register_module(name='_GammaNetTestHeadPostProcessing', force=True)
class _HeadPostProcessing(FCNHead):
    """Builds (loss and cls_seg are mmseg's) but rescales conv_seg's output in forward."""

    def forward(self, inputs):
        return super().forward(inputs) * 2.0


def test_sece_objective_is_the_sece_term_alone_with_its_own_hypergradient():
    """objective='sece': L_meta = sece_weight * SECE, the same look-ahead; CE stays in the logs only."""
    both = _build(_cfg('pixel')).double()
    _randomise(both.gamma_net)
    alone = _build(_cfg('pixel', objective='sece', sece_weight=2.0)).double()
    alone.load_state_dict(both.state_dict())
    train = both.data_preprocessor(_batch(seed=0), True)
    meta = both.data_preprocessor(_batch(seed=1), True)
    objective_both, logs_both = both.meta_objective(train, meta, lr=2.0)
    objective_alone, logs_alone = alone.meta_objective(train, meta, lr=2.0)
    assert float(objective_both) == pytest.approx(float(logs_both['meta_ce'] + logs_both['meta_sece']), rel=1e-12)
    assert float(objective_alone) == pytest.approx(2.0 * float(logs_alone['meta_sece']), rel=1e-12)
    assert float(logs_alone['meta_ce']) == pytest.approx(float(logs_both['meta_ce']), rel=1e-12)
    assert float(objective_alone) != pytest.approx(float(objective_both))


def _with(cfg: dict, path: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    keys = path.split('.')
    for key in keys[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


_DELETE = object()


@pytest.mark.parametrize('path, value, match', [
    ('meta', _DELETE, 'needs a meta split'),
    ('meta.dataloader', _DELETE, 'needs a meta split'),
    ('meta.dataloader.dataset', _voc(), "type='HeldOutSplit'"),
    ('meta.dataloader.dataset.part', 'train', "part='held_out'"),
    ('meta.dataloader.sampler', dict(type='InfiniteSampler'), 'DefaultSampler'),
    ('meta.dataloader.batch_size', 0, 'batch_size'),
    ('meta.lr_lookahaed', 0.1, r"unknown keys \['lr_lookahaed'\]"),
    ('meta.lr_lookahead', -1.0, 'lr_lookahead'),
    ('meta.sece_weight', -0.5, 'sece_weight'),
    ('meta.objective', 'ce', r"objective must be one of \['ce\+sece', 'sece'\]"),
    ('meta.grad_clip', 0.0, 'grad_clip'),
    ('meta.optimizer', dict(lr=1e-3), 'optimizer'),
    ('meta.check_sync', 1, 'check_sync'),
    ('meta.sece_bandwidth', 0.0, 'bandwidth'),
    ('gamma_net.gama_max', 4.0, r"unknown keys \['gama_max'\]"),
    ('gamma_net.per', 'region', 'per'),
    ('decode_head.loss_decode', dict(type='CrossEntropyLoss'), 'SampleWiseFocalLoss'),
    ('auxiliary_head.loss_decode', dict(type='SampleWiseFocalLoss'), 'auxiliary heads get no'),
    ('decode_head.type', '_GammaNetTestHeadOwnClassifier', 'cls_seg'),
])
def test_bad_configs_fail_at_build(path, value, match):
    with pytest.raises(ValueError, match=match):
        _build(_with(_cfg(), path, value))


def test_a_cascade_of_heads_fails_at_build():
    cfg = _cfg()
    cfg['decode_head'] = [cfg['decode_head'], copy.deepcopy(cfg['decode_head'])]
    with pytest.raises(ValueError, match='one decode head'):
        _build(cfg)


def test_a_head_that_post_processes_its_logits_fails_before_any_update():
    model = _build(_with(_cfg(), 'decode_head.type', '_GammaNetTestHeadPostProcessing'))
    data = model.data_preprocessor(_batch(), True)
    with pytest.raises(RuntimeError, match='conv_seg unchanged'):
        model.meta_objective(data, data, lr=1.0)


def test_demo_config_builds_and_splits_the_training_set_in_two():
    cfg = Config.fromfile(DEMO)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert isinstance(model, GammaNetEncoderDecoder) and model.gamma_net.per == 'pixel'
    train, meta = cfg.train_dataloader.dataset, cfg.model.meta.dataloader.dataset
    assert (train.type, train.part, meta.type, meta.part) == ('HeldOutSplit', 'train', 'HeldOutSplit', 'held_out')
    # complementary parts of one split: same wrapped dataset, size and seed
    assert train.dataset == meta.dataset and train.held_out == meta.held_out and train.seed == meta.seed
    assert cfg.model_wrapper_cfg == dict(type='TrainStepDelegatingDDP')
