"""RankMixupEncoderDecoder: built from the demo configs, one training step, the mixing it does, bad configs."""
from __future__ import annotations

import copy
import os.path as osp

import pytest
import torch
import torch.distributed as dist
from calibseg_testing import ROOT
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODEL_WRAPPERS, init_default_scope
from mmengine.structures import PixelData
from mmseg.models.decode_heads import FCNHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import calibseg  # noqa: F401
from calibseg.functional.mixup import MixupDraw, draw_mixup
from calibseg.models.segmentors import RankMixupEncoderDecoder

CONFIG = osp.join(ROOT, 'configs', 'rankmixup', 'fcn_r18-d16_rankmixup-{}_1xb8-600it_demo-voc12aug-96x96.py')
SIZE = 32
IGNORE = 255


def _cfg(mode: str) -> Config:
    cfg = Config.fromfile(CONFIG.format(mode))
    cfg.model.data_preprocessor.size = (SIZE, SIZE)
    return cfg


def _build(config: str = 'mrl', /, **rankmixup) -> RankMixupEncoderDecoder:
    """The demo model of ``config`` ('mrl' or 'mndcg') with ``rankmixup`` options overridden."""
    init_default_scope('mmseg')
    cfg = _cfg(config)
    cfg.model.rankmixup.update(rankmixup)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    return model.train()


def _no_dropout(model: RankMixupEncoderDecoder) -> RankMixupEncoderDecoder:
    model.decode_head.dropout = None
    model.auxiliary_head.dropout = None
    return model


def _labels() -> list:
    """Two label maps with different classes on most pixels, a few ignored."""
    first = torch.full((1, SIZE, SIZE), 1, dtype=torch.long)
    first[..., SIZE // 2:] = 2
    second = torch.full((1, SIZE, SIZE), 3, dtype=torch.long)
    second[:, SIZE // 2:] = 1
    second[:, :2] = IGNORE
    return [first, second]


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for labels in _labels():
        sample = SegDataSample(gt_sem_seg=PixelData(data=labels))
        sample.set_metainfo(dict(img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE)))
        samples.append(sample)
    images = [torch.randint(0, 256, (3, SIZE, SIZE), generator=g, dtype=torch.uint8) for _ in samples]
    return dict(inputs=images, data_samples=samples)


def _optim(model, mode='mrl'):
    return build_optim_wrapper(model, _cfg(mode).optim_wrapper)


# ------------------------------------------------------------------------------------------------- training step
@pytest.mark.parametrize('mode, num_mixups', [('mrl', 1), ('mndcg', 3)])
def test_train_step_updates_weights_and_logs(mode, num_mixups):
    model = _build(mode)
    assert model.num_mixups == num_mixups
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    expected_draw = draw_mixup(2, num_mixups, 2.0, torch.Generator().manual_seed(0))  # seed 0 of the config
    out = model.train_step(_batch(), _optim(model, mode))
    assert {'loss', 'decode.loss_ce', 'aux.loss_ce', f'loss_{mode}', 'mixup_lambda'} <= set(out)
    losses = [v for k, v in out.items() if 'loss' in k and k != 'loss']
    torch.testing.assert_close(out['loss'], sum(losses))
    assert out[f'loss_{mode}'].item() > 0
    assert out['mixup_lambda'].item() == pytest.approx(expected_draw.lams.mean().item(), rel=1e-6)
    changed = [k for k, v in model.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert any(k.startswith('backbone.') for k in changed)
    assert any(k.startswith('decode_head.conv_seg') for k in changed)


def test_mixed_forward_is_lambda_x_plus_one_minus_lambda_partner_and_the_loss_matches():
    """The second pass sees lam * x + (1 - lam) * x[pi]; the logged MRL is the per-pixel masked mean computed here
    from independent forwards (BN in train mode: the same batch statistics for the same batches)."""
    model = _build('mrl', loss_weight=0.5, margin=2.0)
    _no_dropout(model)  # dropout would make the two sets of forwards differ
    data = model.data_preprocessor(_batch(), True)
    inputs, samples = data['inputs'], data['data_samples']
    draw = MixupDraw(torch.tensor([0.3], dtype=torch.float64), torch.tensor([[1, 0]]))
    seen = []
    real_extract = model.extract_feat

    def spy(x):
        seen.append(x.detach().clone())
        return real_extract(x)

    model.extract_feat = spy
    losses = model(inputs, samples, mode='loss', mixup=draw)
    del model.extract_feat
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], inputs)
    torch.testing.assert_close(seen[1], 0.3 * inputs + 0.7 * inputs[[1, 0]])

    with torch.no_grad():
        raw = model.decode_head(model.extract_feat(inputs))
        mixed = model.decode_head(model.extract_feat(seen[1]))
        up = dict(size=(SIZE, SIZE), mode='bilinear', align_corners=model.decode_head.align_corners)
        raw = torch.nn.functional.interpolate(raw, **up)
        mixed = torch.nn.functional.interpolate(mixed, **up)
        target = torch.cat(_labels())
        partner = target[[1, 0]]
        valid = (target != IGNORE) & (partner != IGNORE) & (target != partner)
        per_pixel = torch.relu(mixed.amax(1) - raw.amax(1) + 2.0)
        expected = per_pixel[valid].mean()
    assert valid.any() and not valid.all()
    torch.testing.assert_close(losses['loss_mrl'].detach(), 0.5 * expected, rtol=1e-5, atol=1e-6)
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg', 'aux.loss_ce', 'aux.acc_seg', 'loss_mrl'}


def test_mndcg_concatenates_the_mixups_in_one_pass():
    model = _build('mndcg')
    data = model.data_preprocessor(_batch(), True)
    inputs = data['inputs']
    draw = MixupDraw(torch.tensor([0.2, 0.9, 0.6], dtype=torch.float64), torch.tensor([[1, 0], [0, 1], [1, 0]]))
    seen = []
    real_extract = model.extract_feat
    model.extract_feat = lambda x: (seen.append(x.detach().clone()), real_extract(x))[1]
    losses = model(inputs, data['data_samples'], mode='loss', mixup=draw)
    del model.extract_feat
    assert [s.shape[0] for s in seen] == [2, 6]
    expected = torch.cat([lam * inputs + (1 - lam) * inputs[perm] for lam, perm in
                          zip([0.2, 0.9, 0.6], [[1, 0], [0, 1], [1, 0]])])
    torch.testing.assert_close(seen[1], expected)
    assert losses['loss_mndcg'].item() > 0


def test_mndcg_same_label_option_reaches_the_loss():
    # the pair (image 1, itself) in draw 1 shares every label: kept with relevance 1 by default, masked on request
    draw = MixupDraw(torch.tensor([0.2, 0.9, 0.6], dtype=torch.float64), torch.tensor([[1, 0], [0, 1], [1, 0]]))
    values = {}
    for option in ('keep', 'mask'):
        model = _no_dropout(_build('mndcg', same_label=option))
        assert model.same_label == option
        data = model.data_preprocessor(_batch(), True)
        values[option] = model(data['inputs'], data['data_samples'], mode='loss', mixup=draw)['loss_mndcg'].item()
    assert _build('mndcg').same_label == 'keep'
    assert values['keep'] != pytest.approx(values['mask'])


def test_generator_state_travels_with_the_state_dict():
    model = _build('mrl', seed=7)
    model.draw_mixup(2)
    state = model.state_dict()
    assert '_extra_state' in state
    next_draw = model.draw_mixup(2)
    fresh = _build('mrl', seed=7)
    fresh.load_state_dict(state)
    again = fresh.draw_mixup(2)
    assert torch.equal(again.lams, next_draw.lams) and torch.equal(again.permutations, next_draw.permutations)
    other = _build('mrl', seed=8).draw_mixup(2)
    assert not torch.equal(other.lams, _build('mrl', seed=7).draw_mixup(2).lams)


def test_plain_loss_is_refused_while_training():
    model = _build('mrl')
    data = model.data_preprocessor(_batch(), True)
    with pytest.raises(RuntimeError, match='TrainStepDelegatingDDP'):
        model(data['inputs'], data['data_samples'], mode='loss')
    model.eval()
    assert 'decode.loss_ce' in model(data['inputs'], data['data_samples'], mode='loss')
    with pytest.raises(ValueError, match="mode='loss'"):
        model(data['inputs'], data['data_samples'], mode='tensor', mixup=model.draw_mixup(2))


def test_inference_is_encoder_decoders():
    model = _build('mrl').eval()
    data = model.data_preprocessor(_batch(), False)
    with torch.no_grad():
        out = model(data['inputs'], data['data_samples'], mode='predict')
    assert out[0].seg_logits.data.shape == (21, SIZE, SIZE)


@pytest.fixture
def single_process_group(tmp_path):
    if dist.is_initialized():
        pytest.skip('a process group already exists')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_delegating_ddp_step_equals_the_plain_step(single_process_group):
    """Through TrainStepDelegatingDDP (one gloo process) the step is the module's and gives the same weights."""
    plain = _no_dropout(_build('mrl'))
    wrapped_module = copy.deepcopy(plain)
    wrapper = MODEL_WRAPPERS.build(dict(type='TrainStepDelegatingDDP', module=wrapped_module, device_ids=None))
    out_plain = plain.train_step(_batch(), _optim(plain))
    out_ddp = wrapper.train_step(_batch(), _optim(wrapped_module))
    assert wrapped_module.delegated_train_steps == 1
    torch.testing.assert_close(out_ddp['loss_mrl'], out_plain['loss_mrl'])
    for (name, a), (_, b) in zip(plain.named_parameters(), wrapped_module.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)


# ------------------------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize('mode, options, key', [
    ('mrl', dict(alpha=0.0), 'alpha'),
    ('mrl', dict(alpha=-1.0), 'alpha'),
    ('mndcg', dict(alpha=float('nan')), 'alpha'),
    ('mrl', dict(mode='ndcg'), 'mode'),
    ('mrl', dict(num_mixups=3), 'num_mixups'),
    ('mndcg', dict(num_mixups=1), 'num_mixups'),
    ('mndcg', dict(num_mixups=2.0), 'num_mixups'),
    ('mndcg', dict(margin=1.0), 'margin'),
    ('mrl', dict(margin=-0.5), 'margin'),
    ('mrl', dict(loss_weight=float('inf')), 'loss_weight'),
    ('mrl', dict(seed=-1), 'seed'),
    ('mrl', dict(beta=2.0), 'unknown keys'),
    ('mndcg', dict(same_label='drop'), 'same_label'),
    ('mrl', dict(same_label='mask'), 'same_label'),
])
def test_bad_rankmixup_config_fails_at_build_naming_the_key(mode, options, key):
    with pytest.raises(ValueError, match=key):
        _build(mode, **options)


def test_missing_rankmixup_and_unsupported_heads():
    init_default_scope('mmseg')
    cfg = _cfg('mrl').model
    cfg.pop('rankmixup')
    with pytest.raises(ValueError, match='model.rankmixup is required'):
        MODELS.build(cfg)

    cfg = _cfg('mrl').model
    cfg.decode_head.update(num_classes=2, out_channels=1, threshold=0.5,
                           loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True))
    with pytest.raises(ValueError, match='out_channels >= 2'):
        MODELS.build(cfg)

    @MODELS.register_module(name='_RankMixupTestOwnLossHead', force=True)
    class _OwnLossHead(FCNHead):
        def loss(self, inputs, batch_data_samples, train_cfg):
            return super().loss(inputs, batch_data_samples, train_cfg)

    cfg = _cfg('mrl').model
    cfg.decode_head.type = '_RankMixupTestOwnLossHead'
    with pytest.raises(ValueError, match='overrides loss'):
        MODELS.build(cfg)
