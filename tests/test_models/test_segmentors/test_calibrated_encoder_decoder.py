"""CalibratedEncoderDecoder: calibrated logits on mmseg's test path, LTS before the resize, build-time errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import calibseg  # noqa: F401  (registers CalibratedEncoderDecoder)
from calibseg.calibrators import (
    BinaryTemperatureBiasScaling,
    BinaryTemperatureScaling,
    ClasswiseTemperatureScaling,
    LocalTemperatureScaling,
    TemperatureScaling,
    VectorScaling,
    save_calibrator,
)
from calibseg.models.segmentors import image_at_logits_size, resolve_calibrator_method

K = 5
INPUT = (32, 32)
ORIGINAL = (40, 52)  # postprocess_result resizes the logits from the input size to this


def model_cfg(num_classes=K, out_channels=None, calibrator=None, threshold=None):
    """A tiny FCN ResNet-18 (8 base channels, output stride 8): native logits are 4x4 for 32 px inputs."""
    head = dict(type='FCNHead', in_channels=64, channels=8, num_convs=1, concat_input=False, num_classes=num_classes,
                norm_cfg=dict(type='BN'), align_corners=False,
                loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=out_channels == 1, loss_weight=1.0,
                                 avg_non_ignore=True))
    if out_channels is not None:
        head.update(out_channels=out_channels, threshold=threshold)
    cfg = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0., 0., 0.], std=[1., 1., 1.]),
        backbone=dict(type='ResNetV1c', depth=18, stem_channels=8, base_channels=8, num_stages=4,
                      strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), out_indices=(3,), contract_dilation=True,
                      norm_cfg=dict(type='BN')),
        decode_head=head, train_cfg=ConfigDict(), test_cfg=ConfigDict(mode='whole'))
    if calibrator is not None:
        cfg.update(type='CalibratedEncoderDecoder', calibrator=calibrator)
    return cfg


def build(cfg, state=None):
    init_default_scope('mmseg')
    model = MODELS.build(cfg)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope='module')
def plain():
    torch.manual_seed(0)
    model = build(model_cfg())
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode logits are not all alike
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def inputs_and_samples(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(n, 3, *INPUT, generator=g)
    samples = []
    for _ in range(n):
        s = SegDataSample(metainfo=dict(ori_shape=ORIGINAL, img_shape=INPUT, pad_shape=INPUT,
                                        padding_size=[0, 0, 0, 0]))
        s.gt_sem_seg = PixelData(data=torch.zeros(1, *ORIGINAL, dtype=torch.long))
        samples.append(s)
    return inputs, samples


def fitted(calibrator, seed=1):
    """Give ``calibrator`` non-trivial parameters and mark it fitted (as a fit would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in calibrator.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if p.dim() == 1 and p.numel() == K else 0.0))
        if isinstance(calibrator, LocalTemperatureScaling):  # the head starts at zero weight: T == 1 everywhere
            calibrator.head.weight.copy_(torch.randn(calibrator.head.weight.shape, generator=g))
    calibrator.is_fitted.fill_(True)
    return calibrator


def write(tmp_path, calibrator, name='cal.pth'):
    path = tmp_path / name
    save_calibrator(path, calibrator)
    return str(path)


def resize(x, size):
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False)


# ------------------------------------------------------------------------------------------ multi-class heads
@pytest.mark.parametrize('calibrator', [
    TemperatureScaling(num_classes=K), ClasswiseTemperatureScaling(num_classes=K), VectorScaling(num_classes=K)],
    ids=lambda c: type(c).__name__)
def test_calibrated_logits_are_calibrator_of_logits(plain, tmp_path, calibrator):
    cal = fitted(calibrator)
    model = build(model_cfg(calibrator=dict(file=write(tmp_path, cal))), plain.state_dict())
    inputs, samples = inputs_and_samples()
    with torch.no_grad():
        native = plain(inputs, mode='tensor')
        assert native.shape == (2, K, 4, 4)
        torch.testing.assert_close(model(inputs, mode='tensor'), cal(native))
        ref = plain.predict(inputs, [s.clone() for s in samples])
        out = model.predict(inputs, [s.clone() for s in samples])
    for r, o in zip(ref, out):
        assert o.seg_logits.data.shape == (K, *ORIGINAL)
        # per-class affine maps commute with the bilinear resizes: calibrating the stored logits gives the same
        torch.testing.assert_close(o.seg_logits.data, cal(r.seg_logits.data[None])[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(o.pred_sem_seg.data, o.seg_logits.data.argmax(0, keepdim=True))
    assert not torch.allclose(out[0].seg_logits.data, ref[0].seg_logits.data)  # the calibrator did something
    # the calibrator is not part of the network: same state_dict keys, no parameters of its own
    assert set(model.state_dict()) == set(plain.state_dict())
    assert len(list(model.parameters())) == len(list(plain.parameters()))


@pytest.mark.parametrize('use_image', [False, True])
def test_lts_runs_on_native_logits_before_the_resize(plain, tmp_path, use_image):
    lts = fitted(LocalTemperatureScaling(num_classes=K, use_image=use_image, hidden_channels=4))
    model = build(model_cfg(calibrator=dict(file=write(tmp_path, lts), method='lts')), plain.state_dict())
    inputs, samples = inputs_and_samples()
    with torch.no_grad():
        native = plain(inputs, mode='tensor')  # (2, K, 4, 4)
        image = F.adaptive_avg_pool2d(inputs, native.shape[2:]) if use_image else None  # 8x8 block means
        temperature = lts.temperature_map(native, image)
        assert temperature.std() > 0.05  # a spatially varying T
        expected = resize(resize(native / temperature, INPUT), ORIGINAL)  # predict_by_feat, postprocess_result
        out = model.predict(inputs, [s.clone() for s in samples])
        torch.testing.assert_close(model(inputs, mode='tensor'), native / temperature)
        for i, o in enumerate(out):
            torch.testing.assert_close(o.seg_logits.data, expected[i], rtol=1e-5, atol=1e-5)
        # LTS on the resized logits (where a wrapper of seg_logits would apply it) gives other values
        full = resize(resize(native, INPUT), ORIGINAL)
        full_image = resize(inputs, ORIGINAL) if use_image else None
        late = lts(full, full_image)
        assert (late - expected).abs().max() > 1e-2


def test_image_at_logits_size_is_block_mean():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    pooled = image_at_logits_size(x, (2, 2))
    torch.testing.assert_close(pooled[1, 2, 1, 0], x[1, 2, 4:, :4].mean())
    assert image_at_logits_size(x, (8, 8)) is x


def test_calibrator_follows_the_logits_dtype_and_is_frozen(plain, tmp_path):
    cal = fitted(TemperatureScaling(num_classes=K))
    model = build(model_cfg(calibrator=dict(file=write(tmp_path, cal), method='TemperatureScaling')),
                  plain.state_dict())
    assert not any(p.requires_grad for p in model.calibrator.parameters())
    inputs, _ = inputs_and_samples()
    model.double()
    with torch.no_grad():
        out = model(inputs.double(), mode='tensor')
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, plain.double()(inputs.double(), mode='tensor') / cal.temperature.double().item())
    plain.float()


# ----------------------------------------------------------------------------------------------- binary heads
@pytest.mark.parametrize('calibrator', [BinaryTemperatureScaling(), BinaryTemperatureBiasScaling()],
                         ids=lambda c: type(c).__name__)
def test_binary_calibrators_act_on_logits_before_the_sigmoid(tmp_path, calibrator):
    torch.manual_seed(0)
    plain = build(model_cfg(num_classes=2, out_channels=1, threshold=0.5))
    cal = fitted(calibrator)
    with torch.no_grad():
        cal.log_temperature.fill_(math.log(0.25))  # sharpen a lot: visible on near-zero logits
    model = build(model_cfg(num_classes=2, out_channels=1, threshold=0.5,
                            calibrator=dict(file=write(tmp_path, cal), method='ts' if
                                            isinstance(cal, BinaryTemperatureScaling) else 'tsb')),
                  plain.state_dict())
    inputs, samples = inputs_and_samples()
    with torch.no_grad():
        native = plain(inputs, mode='tensor')
        assert native.shape == (2, 1, 4, 4)
        out = model.predict(inputs, [s.clone() for s in samples])
        expected = resize(resize(cal(native), INPUT), ORIGINAL).sigmoid()
    for i, o in enumerate(out):
        torch.testing.assert_close(o.seg_logits.data, expected[i], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(o.pred_sem_seg.data, (o.seg_logits.data > 0.5).to(o.seg_logits.data))


def test_binary_method_names():
    assert resolve_calibrator_method('ts', 1) == 'BinaryTemperatureScaling'
    assert resolve_calibrator_method('tsb', 1) == 'BinaryTemperatureBiasScaling'
    assert resolve_calibrator_method('ts', 21) == 'TemperatureScaling'
    with pytest.raises(ValueError, match='one-channel'):
        resolve_calibrator_method('lts', 1)
    with pytest.raises(ValueError, match='5-class'):
        resolve_calibrator_method('tsb', 5)


# ------------------------------------------------------------------------------------------- build-time errors
def test_mismatching_calibrator_files_fail_at_build_time(plain, tmp_path):
    ts7 = write(tmp_path, fitted(TemperatureScaling(num_classes=7)), 'ts7.pth')
    with pytest.raises(ValueError, match=r'num_classes=7.*expected_num_classes=5'):
        build(model_cfg(calibrator=dict(file=ts7)))
    ts = write(tmp_path, fitted(TemperatureScaling(num_classes=K)), 'ts.pth')
    with pytest.raises(ValueError, match="TemperatureScaling calibrator, but expected_method='VectorScaling'"):
        build(model_cfg(calibrator=dict(file=ts, method='vs')))
    with pytest.raises(ValueError, match="method 'tsb' does not apply to a 5-class head"):
        build(model_cfg(calibrator=dict(file=ts, method='tsb')))
    with pytest.raises(FileNotFoundError, match='calibrator file not found'):
        build(model_cfg(calibrator=dict(file=str(tmp_path / 'missing.pth'))))
    no_calibrator = model_cfg(calibrator=dict(file=ts))
    no_calibrator['calibrator'] = None
    with pytest.raises(ValueError, match='needs calibrator=dict'):
        build(no_calibrator)
    with pytest.raises(ValueError, match=r"unknown calibrator keys \['temperature'\]"):
        build(model_cfg(calibrator=dict(file=ts, temperature=2.0)))
    not_a_calibrator = tmp_path / 'weights.pth'
    torch.save({'state_dict': plain.state_dict()}, not_a_calibrator)
    with pytest.raises(ValueError, match='not a calibseg calibrator file'):
        build(model_cfg(calibrator=dict(file=str(not_a_calibrator))))
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(open(ts, 'rb').read()[:200])  # issue 17: a damaged file is named, never half-loaded
    with pytest.raises(ValueError, match=r'truncated.pth: not a readable calibseg calibrator file \(truncated'):
        build(model_cfg(calibrator=dict(file=str(truncated))))
    binary = write(tmp_path, fitted(BinaryTemperatureScaling()), 'binary.pth')
    with pytest.raises(ValueError, match='num_classes=1.*expected_num_classes=5'):
        build(model_cfg(calibrator=dict(file=binary)))
    with pytest.raises(ValueError, match='expected_num_classes=1'):  # a multi-class file on a one-channel head
        build(model_cfg(num_classes=2, out_channels=1, threshold=0.5, calibrator=dict(file=ts)))


def test_heads_that_override_predict_are_rejected(tmp_path):
    ts = write(tmp_path, fitted(TemperatureScaling(num_classes=K)))
    cfg = model_cfg(calibrator=dict(file=ts))
    cfg['decode_head'] = dict(type='DAHead', in_channels=64, in_index=0, channels=8, pam_channels=4,
                              num_classes=K, norm_cfg=dict(type='BN'),
                              loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0))
    with pytest.raises(ValueError, match='DAHead overrides predict'):
        build(cfg)
