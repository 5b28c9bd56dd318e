"""calibseg.apis.posthoc: fitting and evaluating calibrators from a built model or from a config + checkpoint."""
from __future__ import annotations

import math
import os
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from calibseg_testing import DEMO_CONFIG, POSTHOC_CONFIG, posthoc_options, tiny_run_options
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from calibseg.apis import build_dataloader, build_model, evaluate_calibrator, fit_calibrator
from calibseg.apis.posthoc import LogitSource, check_output_path, default_out
from calibseg.calibrators import (
    BinaryTemperatureBiasScaling,
    BinaryTemperatureScaling,
    TemperatureScaling,
    load_calibrator,
)


def plain(voc, checkpoint, method='ts'):
    cfg = Config.fromfile(POSTHOC_CONFIG.format(method))
    cfg.merge_from_dict(posthoc_options(voc))
    return cfg, build_model(cfg, checkpoint, plain=True)


def test_label_source_pixels_are_the_metric_pixels(tiny_voc, checkpoint):
    cfg, model = plain(tiny_voc, checkpoint)
    loader = build_dataloader(cfg['test_dataloader'])
    source = LogitSource(model, loader, ignore_index=255, max_pixels=None)
    items = list(source)
    assert len(items) == 5 and source.num_images == 5
    with torch.no_grad():
        for (z, y), batch in zip(items, loader):
            sample = model.test_step(batch)[0]
            logits, labels = sample.seg_logits.data, sample.gt_sem_seg.data[0]
            valid = labels != 255
            torch.testing.assert_close(z, logits[:, valid].t())
            torch.testing.assert_close(y, labels[valid].long())


def test_pixel_subsampling_is_seeded_and_repeatable(tiny_voc, checkpoint):
    cfg, model = plain(tiny_voc, checkpoint)
    loader = build_dataloader(cfg['calib_dataloader'])

    def pixels(seed):
        return LogitSource(model, loader, ignore_index=255, max_pixels=50, seed=seed, cache=False)

    source = pixels(0)
    first, second = list(source), list(source)  # two network passes
    assert source.network_passes == 2
    assert all(z.shape == (50, 21) and y.shape == (50,) for z, y in first)
    for (z1, y1), (z2, y2) in zip(first, second):
        assert torch.equal(z1, z2) and torch.equal(y1, y2)
    other = list(pixels(1))
    assert not all(torch.equal(z1, z2) for (z1, _), (z2, _) in zip(first, other))


def test_lts_loss_is_the_nll_of_the_resized_logits(tiny_voc, checkpoint):
    """lts_loss='input': the objective is the NLL that the test metrics measure (logits resized to the input)."""
    cfg, model = plain(tiny_voc, checkpoint, 'lts')
    loader = build_dataloader(cfg['calib_dataloader'])
    result = fit_calibrator('lts', model=model, dataloader=loader, fit_cfg=dict(epochs=1, lr=1e-12))  # T stays 1
    nll_sum, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            sample = model.test_step(batch)[0]
            labels = sample.gt_sem_seg.data[0]
            nll_sum += float(F.cross_entropy(sample.seg_logits.data[None], labels[None].long(), ignore_index=255,
                                             reduction='sum'))
            count += int((labels != 255).sum())
    info = result['calibrator'].fit_info
    assert info['num_pixels'] == count  # every labelled input pixel, not only the 2x2 native ones
    assert info['loss_resolution'] == 'labels'
    assert math.isclose(info['epoch_nll'][0], nll_sum / count, rel_tol=1e-5)
    assert math.isclose(result['before']['NLL'], nll_sum / count, rel_tol=1e-5)
    assert info['temperature_mean'] == pytest.approx(1.0, abs=1e-6)  # every T(x) of the maps
    native = fit_calibrator('lts', model=model, dataloader=loader, fit_cfg=dict(epochs=1), lts_loss='native')
    assert native['calibrator'].fit_info['num_pixels'] <= 5 * 4  # labels at the 2x2 logit pixels of 5 images


def test_fit_from_config_writes_the_file_the_posthoc_config_loads(tiny_voc, checkpoint, tmp_path):
    out = str(tmp_path / 'cts.pth')
    result = fit_calibrator(config=POSTHOC_CONFIG.format('cts'), checkpoint=checkpoint, out=out,
                            cfg_options=posthoc_options(tiny_voc), calibrator_cfg=dict(max_iter=20),
                            meta={'command': 'test'})
    assert result['file'] == out and result['split'] == 'calib_dataloader' and result['num_images'] == 5
    cal = load_calibrator(out, expected_method='ClasswiseTemperatureScaling', expected_num_classes=21)
    assert cal.meta['resolution'] == 'label' and cal.meta['command'] == 'test' and cal.meta['classes'][0] == \
        'background'
    assert result['after']['NLL'] < result['before']['NLL']
    cfg = Config.fromfile(POSTHOC_CONFIG.format('cts'))
    cfg.model.calibrator.file = out
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert type(model.calibrator).__name__ == 'ClasswiseTemperatureScaling'


def test_outputs_are_refused_unless_forced_and_inputs_never(tiny_voc, checkpoint, tmp_path):
    """Issue 17: fit_calibrator overwrote an existing calibrator silently; an output must never be an input."""
    out = tmp_path / 'ts.pth'
    out.write_bytes(b'precious')
    common = dict(config=POSTHOC_CONFIG.format('ts'), checkpoint=checkpoint,
                  cfg_options=posthoc_options(tiny_voc), max_pixels_per_image=50)
    with pytest.raises(FileExistsError, match='without --force'):
        fit_calibrator(out=str(out), **common)
    assert out.read_bytes() == b'precious'
    with pytest.raises(ValueError, match='is an input of this command'):
        fit_calibrator(out=checkpoint, force=True, **common)
    assert torch.load(checkpoint, weights_only=False)['meta']['iter'] == 2  # untouched
    fit_calibrator(out=str(out), force=True, **common)
    assert load_calibrator(out).fitted
    with pytest.raises(ValueError, match='is an input'):
        check_output_path(osp.join(osp.dirname(checkpoint), '.', osp.basename(checkpoint)), inputs=[checkpoint],
                          force=True)
    link = tmp_path / 'link.pth'
    os.symlink(checkpoint, link)
    with pytest.raises(ValueError, match='is an input'):
        check_output_path(str(link), inputs=[checkpoint], force=True)


def test_api_errors(tiny_voc, checkpoint, tmp_path):
    options = tiny_run_options(tiny_voc)
    with pytest.raises(ValueError, match='--method is required'):
        fit_calibrator(config=DEMO_CONFIG, checkpoint=checkpoint, cfg_options=options)
    with pytest.raises(ValueError, match=r'config has no calib_dataloader \(it has \['):
        fit_calibrator('ts', config=DEMO_CONFIG, checkpoint=checkpoint, split='calib', cfg_options=options,
                       out=str(tmp_path / 'a.pth'))
    with pytest.raises(ValueError, match="differs from the config's model.calibrator.method"):
        fit_calibrator('vs', config=POSTHOC_CONFIG.format('ts'), checkpoint=checkpoint,
                       cfg_options=posthoc_options(tiny_voc))
    with pytest.raises(ValueError, match="'tsb' does not apply to a 21-class head"):
        fit_calibrator('tsb', config=DEMO_CONFIG, checkpoint=checkpoint, out=str(tmp_path / 'x.pth'),
                       cfg_options=options)
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        fit_calibrator('ts', config=DEMO_CONFIG, checkpoint=str(tmp_path / 'missing.pth'))
    with pytest.raises(ValueError, match='either model= and dataloader='):
        fit_calibrator('ts', config=DEMO_CONFIG)
    assert default_out(osp.join('work_dirs', 'run', 'iter_600.pth'), 'cts') == \
        osp.join('work_dirs', 'run', 'iter_600_calib-cts.pth')


def test_evaluate_calibrator_equals_a_direct_computation(tiny_voc, checkpoint):
    cfg, model = plain(tiny_voc, checkpoint)
    loader = build_dataloader(cfg['test_dataloader'])
    ts = TemperatureScaling(num_classes=21).fit(torch.randn(50, 21), torch.randint(0, 21, (50,)))
    with torch.no_grad():
        ts.log_temperature.fill_(math.log(2.0))
    out = evaluate_calibrator(ts, model=model, dataloader=loader)
    nll = {1.0: [0.0, 0], 2.0: [0.0, 0]}
    with torch.no_grad():
        for sample in (s for batch in loader for s in model.test_step(batch)):
            y = sample.gt_sem_seg.data[0].long()
            for t in nll:
                nll[t][0] += float(F.cross_entropy(sample.seg_logits.data[None] / t, y[None], ignore_index=255,
                                                   reduction='sum'))
                nll[t][1] += int((y != 255).sum())
    assert out['uncalibrated']['NLL'] == pytest.approx(nll[1.0][0] / nll[1.0][1], rel=1e-5)
    assert out['calibrated']['NLL'] == pytest.approx(nll[2.0][0] / nll[2.0][1], rel=1e-5)
    assert out['calibrated']['Acc'] == out['uncalibrated']['Acc']  # TS keeps the predictions
    by_config = evaluate_calibrator(ts, config=POSTHOC_CONFIG.format('ts'), checkpoint=checkpoint,
                                    cfg_options=posthoc_options(tiny_voc))  # the test split by default
    assert by_config == out
    with pytest.raises(ValueError, match='has num_classes=3'):
        evaluate_calibrator(TemperatureScaling(num_classes=3), model=model, dataloader=loader)


def binary_batches(n=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n):
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
        label = (image[0] > 128).long()  # learnable from the image; the random model is simply miscalibrated
        label[:2] = 255
        sample = SegDataSample(metainfo=dict(ori_shape=(size, size), img_shape=(size, size)))
        sample.gt_sem_seg = PixelData(data=label[None])
        batches.append(dict(inputs=[image], data_samples=[sample]))
    return batches


@pytest.mark.parametrize('method,cls', [('ts', BinaryTemperatureScaling), ('tsb', BinaryTemperatureBiasScaling)])
def test_binary_heads_get_the_binary_calibrators_on_logits(method, cls):
    init_default_scope('mmseg')
    cfg = Config.fromfile(DEMO_CONFIG).model
    cfg.decode_head.update(num_classes=2, out_channels=1, threshold=0.5,
                           loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0))
    cfg.auxiliary_head.update(num_classes=2, out_channels=1, threshold=0.5,
                              loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.4))
    cfg.test_cfg = ConfigDict(mode='whole')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    with torch.no_grad():
        model.decode_head.conv_seg.weight.mul_(300.0)
    model.eval()
    batches = binary_batches()
    result = fit_calibrator(method, model=model, dataloader=batches, max_pixels_per_image=200)
    assert isinstance(result['calibrator'], cls) and result['file'] is None
    z, y = next(iter(result['source']))
    assert z.shape == (200, 1) and set(y.unique().tolist()) <= {0, 1}
    assert z.min() < 0 or z.max() > 1  # logits, not the sigmoid probabilities mmseg stores
    with torch.no_grad():  # the stored pixels are the pre-sigmoid logits of predict's seg_logits
        probs = model.test_step(batches[0])[0].seg_logits.data[0]
    valid = batches[0]['data_samples'][0].gt_sem_seg.data[0] != 255
    assert torch.isin(torch.sigmoid(z[:, 0]), probs[valid]).all()
    assert result['after']['NLL'] < result['before']['NLL']
    with pytest.raises(ValueError, match="'lts' does not apply to a one-channel"):
        fit_calibrator('lts', model=model, dataloader=batches)
