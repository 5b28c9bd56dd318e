"""ASLPEncoderDecoder: alpha looked up by img_path, the update rule, warm-up, clipping and the state round trip."""
import io
import math

import pytest
import torch
from calibseg_testing import one_conv_backbone
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import load_state_dict as mmengine_load_state_dict
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import nn

import calibseg  # noqa: F401  (registers the segmentor and the losses)
from calibseg.models.segmentors import ASLPEncoderDecoder
from calibseg.models.segmentors.aslp_encoder_decoder import _step_seed, aslp_table_keys, key_hash

SIZE = 4
BIAS = 2.0  # the head outputs this logit at every pixel (zero weights), so BCE_i and CAL_i are known by hand


def _model(**options):
    init_default_scope('mmseg')
    loss = options.pop('loss', dict(type='SCBCELoss', beta=2.0, alpha=None, seed=0))
    head = dict(type='FCNHead', in_channels=4, channels=4, num_convs=1, concat_input=False, in_index=0,
                dropout_ratio=0.0, norm_cfg=None, num_classes=2, out_channels=options.pop('out_channels', 1),
                threshold=0.5, loss_decode=loss)
    model = MODELS.build(dict(type='ASLPEncoderDecoder', backbone=dict(type=one_conv_backbone()), decode_head=head,
                              data_preprocessor=dict(type='SegDataPreProcessor', size=(SIZE, SIZE)), **options))
    nn.init.zeros_(model.decode_head.conv_seg.weight)
    nn.init.constant_(model.decode_head.conv_seg.bias, BIAS)
    return model


PATHS = ['/data/DUTS/DUTS-TR/DUTS-TR-Image/a.jpg', '/data/DUTS/DUTS-TR/DUTS-TR-Image/b.jpg',
         '/data/DUTS/DUTS-TR/DUTS-TR-Image/c.jpg']
# image a: all foreground (two pixels ignored); image b: half foreground; image c: background
LABELS = {
    PATHS[0]: torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 255, 255], [1, 1, 1, 1]]),
    PATHS[1]: torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]),
    PATHS[2]: torch.zeros(SIZE, SIZE, dtype=torch.long),
}


def _softplus(x):
    return math.log1p(math.exp(x))


# BCE_i and CAL_i for a constant logit z = 2: CAL = softplus(2) + softplus(-2) for every pixel
CAL = _softplus(BIAS) + _softplus(-BIAS)
BCE = {PATHS[0]: _softplus(-BIAS), PATHS[1]: 0.5 * (_softplus(-BIAS) + _softplus(BIAS)), PATHS[2]: _softplus(BIAS)}


def _batch(paths):
    samples = []
    for path in paths:
        sample = SegDataSample(gt_sem_seg=PixelData(data=LABELS[path][None].clone()))
        sample.set_metainfo(dict(img_path=path, img_shape=(SIZE, SIZE), ori_shape=(SIZE, SIZE)))
        samples.append(sample)
    inputs = [torch.full((3, SIZE, SIZE), 10 * i, dtype=torch.uint8) for i in range(len(paths))]
    return dict(inputs=inputs, data_samples=samples)


def _optim(model):
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))


def _ready(model, alpha, *, acc_val=0.9, epoch=5):
    model.aslp_init_table(PATHS)
    model.aslp_alpha.copy_(torch.tensor(alpha, dtype=torch.float64))
    model.aslp_acc_val.fill_(acc_val)
    model.aslp_set_epoch(epoch)
    return model


def _rule(alpha, path, acc_val, *, beta=2.0, eta=0.002, lam=2000.0, high=0.24):
    step = (CAL - 2 * BCE[path]) / beta + lam * min((1 - acc_val) - beta * alpha, 0.0)
    return min(max(alpha + eta * step, 0.0), high)


def test_hand_values_of_the_constant_logit_model():
    # CAL - 2 BCE for an all-foreground image is softplus(2) - softplus(-2) = 2 exactly
    assert CAL - 2 * BCE[PATHS[0]] == pytest.approx(2.0, abs=1e-12)
    assert CAL - 2 * BCE[PATHS[1]] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize('acc_val', [0.9, 0.95])
def test_update_matches_the_hand_computation_for_two_images(acc_val):
    model = _ready(_model(), [0.01, 0.03, 0.2], acc_val=acc_val)
    log_vars = model.train_step(_batch([PATHS[0], PATHS[1]]), _optim(model))
    # acc_val 0.9 (1 - acc = 0.1): a: 0.01 + 0.002 * 2 / 2 = 0.012 (constraint inactive); b: unchanged 0.03
    # acc_val 0.95 (1 - acc = 0.05): b has beta*alpha = 0.06 > 0.05: 0.03 + 0.002 * 2000 * -0.01 = -0.01 -> 0
    expected = [_rule(0.01, PATHS[0], acc_val), _rule(0.03, PATHS[1], acc_val), 0.2]
    if acc_val == 0.9:
        assert expected[:2] == [pytest.approx(0.012, abs=1e-12), pytest.approx(0.03, abs=1e-12)]
    else:
        assert expected[1] == 0.0
    torch.testing.assert_close(model.aslp_alpha, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert int(model.aslp_steps) == 1
    assert log_vars['aslp_alpha_batch'].item() == pytest.approx((expected[0] + expected[1]) / 2, rel=1e-6)


def test_clipping_to_the_upper_bound_and_to_zero():
    model = _ready(_model(), [0.239, 0.05, 0.001], acc_val=0.0)  # acc 0: no accuracy constraint below 0.5
    model.train_step(_batch([PATHS[0], PATHS[2]]), _optim(model))
    # a: 0.239 + 0.002 = 0.241 -> 1/(2*2) - 0.01 = 0.24
    # c: CAL - 2 BCE = softplus(-2) - softplus(2) = -2: 0.001 + 0.002 * -2 / 2 = -0.001 -> 0; b not in the batch
    assert model.aslp_alpha.tolist() == [0.24, 0.05, 0.0]


def test_alpha_is_looked_up_by_img_path_not_batch_position(monkeypatch):
    model = _ready(_model(), [0.01, 0.02, 0.03])
    loss = model.decode_head.loss_decode
    seen = []
    original = loss.forward

    def spy(*args, **kwargs):
        seen.append(kwargs['alpha'].clone())
        return original(*args, **kwargs)

    monkeypatch.setattr(loss, 'forward', spy)
    model.aslp_set_epoch(0)  # warm-up: no update, only the lookup
    model.train_step(_batch([PATHS[2], PATHS[0]]), _optim(model))
    torch.testing.assert_close(seen[0], torch.tensor([0.03, 0.01], dtype=torch.float64))
    # the same two images in the other order give the same updated table
    first = _ready(_model(), [0.01, 0.02, 0.03])
    second = _ready(_model(), [0.01, 0.02, 0.03])
    first.train_step(_batch([PATHS[0], PATHS[1]]), _optim(first))
    second.train_step(_batch([PATHS[1], PATHS[0]]), _optim(second))
    assert torch.equal(first.aslp_alpha, second.aslp_alpha)
    assert not torch.equal(first.aslp_alpha, torch.tensor([0.01, 0.02, 0.03], dtype=torch.float64))


def test_warm_up_epochs_leave_the_table_unchanged():
    model = _ready(_model(update_from_epoch=3), [0.01, 0.02, 0.03], epoch=1)
    assert not model.aslp_updating  # 0-based epoch 1 is the 2nd epoch < 3
    before = model.aslp_alpha.clone()
    log_vars = model.train_step(_batch([PATHS[0], PATHS[1]]), _optim(model))
    assert torch.equal(model.aslp_alpha, before) and 'aslp_alpha_batch' not in log_vars
    assert int(model.aslp_steps) == 1  # steps are counted from the start (they seed SC-BCE's draws)
    assert model.aslp_set_epoch(2)  # the 3rd epoch updates
    model.train_step(_batch([PATHS[0], PATHS[1]]), _optim(model))
    assert model.aslp_alpha[0].item() == pytest.approx(0.012, abs=1e-12)


def test_update_needs_a_validation_accuracy():
    model = _ready(_model(), [0.0, 0.0, 0.0], acc_val=float('nan'))
    with pytest.raises(RuntimeError, match='validation accuracy'):
        model.train_step(_batch([PATHS[0]]), _optim(model))


def test_state_dict_round_trip_restores_table_keys_and_counters():
    model = _ready(_model(), [0.01, 0.03, 0.2])
    model.train_step(_batch([PATHS[0], PATHS[1]]), _optim(model))
    state = model.state_dict()
    assert {'aslp_alpha', 'aslp_key_hash', 'aslp_acc_val', 'aslp_steps'} <= set(state)
    assert all(isinstance(v, torch.Tensor) for v in state.values())  # mmengine broadcasts every entry under DDP
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # tensors only: safe loading works
    for load in (lambda m, s: m.load_state_dict(s, strict=True), mmengine_load_state_dict):
        fresh = _model()
        assert fresh.aslp_alpha.numel() == 0  # the table's size comes from the checkpoint
        load(fresh, loaded)
        assert torch.equal(fresh.aslp_alpha, model.aslp_alpha)
        assert fresh.aslp_alpha.dtype == torch.float64
        assert fresh.aslp_acc_val.item() == pytest.approx(0.9) and int(fresh.aslp_steps) == 1
        assert torch.equal(fresh.aslp_key_hash, model.aslp_key_hash)
        # the hook's re-keying after a resume keeps the restored values when the training set is the same
        assert fresh.aslp_init_table(list(reversed(PATHS))) == 'restored'
        assert fresh.aslp_keys == ['a.jpg', 'b.jpg', 'c.jpg']
        assert torch.equal(fresh.aslp_alpha, model.aslp_alpha)
        with pytest.raises(ValueError, match=r"another training set: 1 of the 3 training images .*'d.jpg'"):
            fresh.aslp_init_table(PATHS[:2] + ['/data/DUTS/DUTS-TR/DUTS-TR-Image/d.jpg'])
        assert fresh.aslp_init_table(PATHS[:2], reset=True) == 'initialised'
        assert fresh.aslp_alpha.tolist() == [0.0, 0.0]


def test_keys_are_relative_to_the_common_folder():
    root, keys = aslp_table_keys(['/x/DUTS/TR/img/b.jpg', '/x/DUTS/TR/img/sub/a.jpg'])
    assert root == '/x/DUTS/TR/img' and keys == ['b.jpg', 'sub/a.jpg']
    moved = _model()
    moved.aslp_init_table(['/elsewhere/img/b.jpg', '/elsewhere/img/sub/a.jpg'])
    assert moved.aslp_keys == keys
    assert moved.aslp_indices(['/elsewhere/img/sub/a.jpg']).tolist() == [1]
    with pytest.raises(KeyError, match='not in the ASLP table'):
        moved.aslp_indices(['/elsewhere/img/zzz.jpg'])
    assert moved.aslp_key_hash.tolist() == [key_hash('b.jpg'), key_hash('sub/a.jpg')]
    assert key_hash('b.jpg') != key_hash('a.jpg')
    with pytest.raises(ValueError, match='more than once'):
        aslp_table_keys(['/a/x.jpg', '/a/x.jpg'])


def test_empty_table_asks_for_the_hook():
    model = _model()
    with pytest.raises(RuntimeError, match='ASLPHook'):
        model.train_step(_batch([PATHS[0]]), _optim(model))


def test_sc_bce_draws_are_reseeded_from_the_step():
    model = _ready(_model(), [0.24, 0.24, 0.24])
    model.aslp_set_epoch(0)
    batch = _batch(PATHS)

    def loss_at(step):
        model.aslp_steps.fill_(step)
        data = model.data_preprocessor(batch, True)
        return model.loss(**data)['decode.loss_scbce'].item()

    assert loss_at(5) == loss_at(5)  # a resumed run at step 5 draws what the first run drew
    assert len({loss_at(s) for s in range(8)}) > 1  # and the draws change from step to step
    assert len({_step_seed(0, r, s) for r in range(2) for s in range(50)}) == 100


@pytest.mark.parametrize('options, match', [
    (dict(out_channels=2), 'one-channel'),
    (dict(loss=dict(type='CrossEntropyLoss', use_sigmoid=True)), 'adaptive SC-BCE'),
    (dict(loss=dict(type='SCBCELoss', alpha=0.1)), 'adaptive SC-BCE'),
    (dict(update_from_epoch=0), 'update_from_epoch'),
    (dict(eta=-1.0), 'eta'),
    (dict(alpha_margin=0.3), 'alpha_margin'),
    (dict(loss=[dict(type='SCBCELoss', beta=2.0), dict(type='SCBCELoss', beta=1.0, loss_name='loss_b')]), 'one beta'),
])
def test_bad_configs_fail_at_build_time(options, match):
    with pytest.raises(ValueError, match=match):
        _model(**options)


def test_ddp_ignores_the_aslp_buffers():
    model = _model()
    assert isinstance(model, ASLPEncoderDecoder)
    assert model.ddp_ignored_parameter_names() == ['aslp_alpha', 'aslp_key_hash', 'aslp_acc_val', 'aslp_steps']
    assert {name for name, _ in model.named_buffers()} >= set(model.ddp_ignored_parameter_names())
