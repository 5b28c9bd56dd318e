"""calibseg.apis.inference: the one inference loop, build_model and build_dataloader on the demo FCN and tiny VOC."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from calibseg_testing import DEMO_CONFIG, POSTHOC_CONFIG, posthoc_options
from mmengine.config import Config, ConfigDict

from calibseg.apis import Progress, build_dataloader, build_model, dataloader_key, iter_seg_logits, progress_printer
from calibseg.apis.inference import labels_in_input_frame, native_pieces
from calibseg.calibrators import TemperatureScaling


def plain(voc, checkpoint, config=DEMO_CONFIG, options=None):
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options or posthoc_options(voc))
    return cfg, build_model(cfg, checkpoint, plain=True)


def predictions(model, loader):
    """mmseg's own test path: ``test_step`` output per image."""
    with torch.no_grad():
        return [s for batch in loader for s in model.test_step(batch)]


def test_label_resolution_is_what_the_metrics_see(tiny_voc, checkpoint):
    cfg, model = plain(tiny_voc, checkpoint, POSTHOC_CONFIG.format('ts'))
    loader = build_dataloader(cfg['test_dataloader'])
    items = list(iter_seg_logits(model, loader))
    samples = predictions(model, loader)
    assert len(items) == len(samples) == 5
    for position, (item, sample) in enumerate(zip(items, samples)):
        torch.testing.assert_close(item.logits, sample.seg_logits.data, rtol=0, atol=0)  # bit-identical
        assert torch.equal(item.labels, sample.gt_sem_seg.data[0].long())
        assert item.index == position and item.meta['img_path'] == sample.img_path
        assert item.window == (0, 32, 0, 32) and item.image is None
        valid = item.labels != 255
        assert 0 < valid.sum() < item.labels.numel()  # the tiny VOC labels have ignored boundary bands


def test_label_resolution_in_slide_mode_and_batches(tiny_voc, checkpoint):
    options = dict(posthoc_options(tiny_voc), **{'model.test_cfg': dict(mode='slide', crop_size=(24, 24),
                                                                        stride=(16, 16)),
                                                 'test_dataloader.batch_size': 2})
    cfg, model = plain(tiny_voc, checkpoint, POSTHOC_CONFIG.format('ts'), options)
    loader = build_dataloader(cfg['test_dataloader'])
    items = list(iter_seg_logits(model, loader))
    samples = predictions(model, loader)
    assert [i.batch for i in items] == [0, 0, 1, 1, 2]
    for item, sample in zip(items, samples):
        torch.testing.assert_close(item.logits, sample.seg_logits.data, rtol=0, atol=0)


def test_native_resolution_labels_at_the_logit_pixel_centres(tiny_voc, checkpoint):
    cfg, model = plain(tiny_voc, checkpoint, POSTHOC_CONFIG.format('lts'))
    loader = build_dataloader(cfg['calib_dataloader'])
    items = list(iter_seg_logits(model, loader, resolution='native', with_image=True))
    assert len(items) == 5
    with torch.no_grad():
        for item, batch in zip(items, loader):
            data = model.data_preprocessor(batch, False)
            inputs, label = data['inputs'], data['data_samples'][0].gt_sem_seg.data[0]
            assert item.logits.shape == (21, 2, 2)  # 32 px at output stride 16
            torch.testing.assert_close(item.logits[None], model(inputs, mode='tensor'))
            torch.testing.assert_close(item.labels, label[8::16, 8::16].long())  # centres of the 16 px cells
            torch.testing.assert_close(item.image[None], F.avg_pool2d(inputs, 16))
    frames = list(iter_seg_logits(model, loader, resolution='native', native_labels='input'))
    assert frames[0].labels.shape == (32, 32) and frames[0].labels.dtype == torch.int64


def test_native_pieces_follow_mmseg_slide_grid(tiny_voc, checkpoint):
    cfg, model = plain(tiny_voc, checkpoint)
    model.test_cfg = ConfigDict(mode='slide', crop_size=(24, 24), stride=(16, 16))
    inputs = torch.randn(1, 3, 40, 32)
    with torch.no_grad():
        windows = [w for _, _, w in native_pieces(model, inputs)]
    # mmseg: h_grids = max(40 - 24 + 15, 0) // 16 + 1 = 2, w_grids = max(32 - 24 + 15, 0) // 16 + 1 = 2
    assert windows == [(0, 24, 0, 24), (0, 24, 8, 32), (16, 40, 0, 24), (16, 40, 8, 32)]


def test_labels_in_input_frame_resize_flip_and_padding():
    label = torch.tensor([[1, 2, 3], [4, 5, 6]])
    meta = dict(img_shape=(4, 6), padding_size=[0, 2, 0, 1], flip=True, flip_direction='horizontal')
    y = labels_in_input_frame(label, meta, (5, 8), 255)
    expected = label.repeat_interleave(2, 0).repeat_interleave(2, 1).flip(1)
    assert torch.equal(y[:4, :6], expected)
    assert (y[4] == 255).all() and (y[:, 6:] == 255).all()
    with pytest.raises(ValueError, match='but the input is'):
        labels_in_input_frame(label, meta, (6, 8), 255)


@pytest.mark.parametrize('method', ['ts', 'lts'])
def test_calibrated_inference_equals_the_calibrated_segmentor(tiny_voc, checkpoint, tmp_path, method):
    from mmseg.registry import MODELS

    from calibseg.calibrators import LocalTemperatureScaling, save_calibrator

    cfg, model = plain(tiny_voc, checkpoint, POSTHOC_CONFIG.format(method))
    g = torch.Generator().manual_seed(0)
    if method == 'ts':
        calibrator = TemperatureScaling(num_classes=21).fit(torch.randn(100, 21, generator=g),
                                                            torch.randint(0, 21, (100,), generator=g))
        with torch.no_grad():
            calibrator.log_temperature.fill_(0.7)
    else:  # a pixel-dependent temperature that also reads the image
        calibrator = LocalTemperatureScaling(num_classes=21, use_image=True, hidden_channels=4, init_seed=3)
        calibrator.fit(torch.randn(1, 21, 2, 2, generator=g), torch.randint(0, 21, (1, 2, 2), generator=g),
                       torch.randn(1, 3, 2, 2, generator=g), epochs=1, lr=0.5)
    save_calibrator(tmp_path / 'c.pth', calibrator)
    cfg.model.calibrator.file = str(tmp_path / 'c.pth')
    calibrated = MODELS.build(cfg.model)
    calibrated.load_state_dict(model.state_dict())
    calibrated.eval()
    loader = build_dataloader(cfg['test_dataloader'])
    items = list(iter_seg_logits(model, loader, calibrator=calibrator))
    plain_items = list(iter_seg_logits(model, loader))
    for item, uncalibrated, sample in zip(items, plain_items, predictions(calibrated, loader)):
        torch.testing.assert_close(item.logits, sample.seg_logits.data)
        assert not torch.allclose(item.logits, uncalibrated.logits)  # the calibrator did act
    assert 'encode_decode' not in vars(model)  # the model is restored
    with pytest.raises(ValueError, match="resolution='label'"):
        next(iter_seg_logits(model, loader, resolution='native', calibrator=calibrator))


def test_progress_is_reported_per_batch(tiny_voc, checkpoint):
    cfg, model = plain(tiny_voc, checkpoint)
    loader = build_dataloader(dict(cfg['val_dataloader'], batch_size=2))
    seen = []
    list(iter_seg_logits(model, loader, progress=seen.append))
    assert [p.images for p in seen] == [2, 4, 5] and all(p.total == 5 for p in seen)
    assert seen[-1].remaining == 0.0 and seen[-1].rate > 0
    lines = []
    report = progress_printer('[x]', every=3, write=lines.append)
    for p in seen:
        report(p)
    assert len(lines) == 2 and lines[0].startswith('[x]: 4/5 images') and lines[1].startswith('[x]: 5/5 images')
    assert Progress(images=0, total=None, seconds=0.0).remaining is None


def test_build_model_is_strict_and_keeps_the_meta(tiny_voc, checkpoint, tmp_path):
    cfg, model = plain(tiny_voc, checkpoint)
    assert not model.training and model.checkpoint_meta['iter'] == 2
    state = torch.load(checkpoint, weights_only=False)
    del state['state_dict']['decode_head.conv_seg.bias']
    partial = tmp_path / 'partial.pth'
    torch.save(state, partial)
    with pytest.raises(RuntimeError, match='conv_seg.bias'):  # never silently random layers
        build_model(cfg, str(partial))
    safe = build_model(cfg, checkpoint, weights_only=True)
    torch.testing.assert_close(safe.state_dict(), model.state_dict())


def test_build_model_reverts_syncbn(tiny_voc, checkpoint):
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.model.backbone.norm_cfg = dict(type='SyncBN', requires_grad=True)
    model = build_model(cfg, checkpoint)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32), mode='tensor').shape == (1, 21, 2, 2)


def test_dataloader_key_and_order(tiny_voc):
    cfg = Config.fromfile(POSTHOC_CONFIG.format('ts'))
    cfg.merge_from_dict(posthoc_options(tiny_voc))
    assert dataloader_key(cfg) == 'calib_dataloader' and dataloader_key(cfg, 'val') == 'val_dataloader'
    with pytest.raises(ValueError, match=r'config has no nope_dataloader \(it has \['):
        dataloader_key(cfg, 'nope')
    loader = build_dataloader(dict(cfg['val_dataloader'], batch_size=2))
    paths = [s.img_path for batch in loader for s in batch['data_samples']]
    assert paths == [loader.dataset.get_data_info(i)['img_path'] for i in range(5)]  # dataset order, once each
