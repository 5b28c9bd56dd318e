"""tools/fit_calibrator.py and tools/export_calibrated_checkpoint.py on a tiny demo model and tiny VOC data."""
from __future__ import annotations

import importlib.util
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from calibseg_testing import DEMO_CONFIG, ROOT, as_cli_options, tiny_run_options
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import calibseg  # noqa: F401
from calibseg.calibrators import (
    BinaryTemperatureBiasScaling,
    BinaryTemperatureScaling,
    ClasswiseTemperatureScaling,
    TemperatureScaling,
    VectorScaling,
    load_calibrator,
)

POSTHOC = osp.join(ROOT, 'configs', 'posthoc', 'fcn_r18-d16_ce-{}_1xb8-600it_demo-voc12aug-96x96.py')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'calibseg_tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fit_tool = load_tool('fit_calibrator')
export_tool = load_tool('export_calibrated_checkpoint')


def posthoc_options(voc):
    """The tiny-run options, with the post-hoc demo configs' calibration images (tiny VOC's val set here too)."""
    return dict(tiny_run_options(voc), **{'calib_dataloader.dataset.data_root': voc})


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """The demo FCN saved like a Runner's: random weights, a classifier scaled to logits of a few units and biased
    towards the background (so that part of the pixels are right), non-trivial BN statistics."""
    init_default_scope('mmseg')
    cfg = Config.fromfile(DEMO_CONFIG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        model.decode_head.conv_seg.weight.mul_(30.0)
        model.decode_head.conv_seg.bias[0] = 3.0
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp('ckpt') / 'iter_2.pth'
    torch.save({'meta': {'iter': 2, 'dataset_meta': {'classes': tuple(f'c{k}' for k in range(21))}},
                'state_dict': model.state_dict()}, path)
    return str(path)


def plain_model(voc, checkpoint, config=DEMO_CONFIG, options=None):
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options or posthoc_options(voc))
    init_default_scope('mmseg')
    fit_tool.plain_model_cfg(cfg)
    return cfg, fit_tool.build_model(cfg, checkpoint, weights_only=False, device='cpu')


def run(args, cwd):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


# ---------------------------------------------------------------------------------------- the CLI workflow
def test_fit_then_test_the_calibrated_config(tiny_voc, checkpoint, tmp_path):
    options = as_cli_options(posthoc_options(tiny_voc))
    out = tmp_path / 'ts.pth'
    log = run([osp.join(ROOT, 'tools', 'fit_calibrator.py'), POSTHOC.format('ts'), checkpoint, '--out', str(out),
               '--cfg-options', *options], cwd=str(tmp_path))
    assert 'TemperatureScaling fitted' in log and 'T=' in log and 'before' in log and 'after' in log
    cal = load_calibrator(out, expected_method='TemperatureScaling', expected_num_classes=21)
    assert cal.meta['split'] == 'calib_dataloader' and cal.meta['num_images'] == 5
    assert cal.meta['resolution'] == 'label'
    before, after = cal.meta['fit_metrics']['before'], cal.meta['fit_metrics']['after']
    assert after['NLL'] <= before['NLL'] + 1e-9  # the NLL optimum on the fitted pixels
    log = run([osp.join(ROOT, 'tools', 'test.py'), POSTHOC.format('ts'), checkpoint, '--work-dir',
               str(tmp_path / 'test'), '--cfg-options', *options, f'model.calibrator.file={out}'],
              cwd=str(tmp_path))
    assert 'mIoU:' in log and 'ECE:' in log and 'NLL:' in log


# ------------------------------------------------------------------------------------------- the data passes
def test_label_resolution_pixels_are_what_the_metrics_see(tiny_voc, checkpoint):
    cfg, model = plain_model(tiny_voc, checkpoint, POSTHOC.format('ts'))
    loader = fit_tool.build_loader(cfg, 'test_dataloader', 0)
    source = fit_tool.LogitSource(model, loader, native=False, maps=False, use_image=False, ignore_index=255,
                                  max_pixels=0, seed=0, cache=True)
    items = list(source)
    assert len(items) == 5 and source.num_images == 5
    with torch.no_grad():
        for (z, y), batch in zip(items, loader):
            data = model.data_preprocessor(batch, False)
            sample = model.predict(data['inputs'], data['data_samples'])[0]
            logits, labels = sample.seg_logits.data, sample.gt_sem_seg.data[0]
            valid = labels != 255
            assert 0 < valid.sum() < labels.numel()  # the tiny VOC labels have ignored boundary bands
            torch.testing.assert_close(z, logits[:, valid].t())
            torch.testing.assert_close(y, labels[valid].long())


def test_native_resolution_labels_are_taken_at_the_logit_pixel_centres(tiny_voc, checkpoint):
    cfg, model = plain_model(tiny_voc, checkpoint, POSTHOC.format('lts'))
    loader = fit_tool.build_loader(cfg, 'calib_dataloader', 0)
    source = fit_tool.LogitSource(model, loader, native=True, maps=True, use_image=True, ignore_index=255,
                                  max_pixels=0, seed=0, cache=True)
    with torch.no_grad():
        for (z, y, image), batch in zip(source, loader):
            data = model.data_preprocessor(batch, False)
            inputs, label = data['inputs'], data['data_samples'][0].gt_sem_seg.data[0]
            assert z.shape == (1, 21, 2, 2)  # 32 px at output stride 16
            torch.testing.assert_close(z, model(inputs, mode='tensor'))
            torch.testing.assert_close(y[0], label[8::16, 8::16].long())  # centres of the 16 px cells
            torch.testing.assert_close(image, F.avg_pool2d(inputs, 16))


def test_labels_in_input_frame_resize_flip_and_padding():
    label = torch.tensor([[1, 2, 3], [4, 5, 6]])
    meta = dict(img_shape=(4, 6), padding_size=[0, 2, 0, 1], flip=True, flip_direction='horizontal')
    y = fit_tool.labels_in_input_frame(label, meta, (5, 8), 255)
    expected = label.repeat_interleave(2, 0).repeat_interleave(2, 1).flip(1)
    assert torch.equal(y[:4, :6], expected)
    assert (y[4] == 255).all() and (y[:, 6:] == 255).all()
    with pytest.raises(ValueError, match='do not match|but the input is'):
        fit_tool.labels_in_input_frame(label, meta, (6, 8), 255)


def test_pixel_subsampling_is_seeded_and_repeatable(tiny_voc, checkpoint):
    cfg, model = plain_model(tiny_voc, checkpoint, POSTHOC.format('ts'))
    loader = fit_tool.build_loader(cfg, 'calib_dataloader', 0)

    def pixels(seed):
        return fit_tool.LogitSource(model, loader, native=False, maps=False, use_image=False, ignore_index=255,
                                    max_pixels=50, seed=seed, cache=False)

    source = pixels(0)
    first, second = list(source), list(source)  # two network passes
    assert source.network_passes == 2
    assert all(z.shape == (50, 21) and y.shape == (50,) for z, y in first)
    for (z1, y1), (z2, y2) in zip(first, second):
        assert torch.equal(z1, z2) and torch.equal(y1, y2)
    other = list(pixels(1))
    assert not all(torch.equal(z1, z2) for (z1, _), (z2, _) in zip(first, other))


# ---------------------------------------------------------------------------------- methods, files, errors
@pytest.mark.parametrize('method', ['cts', 'lts'])
def test_main_writes_a_calibrator_that_the_posthoc_config_loads(tiny_voc, checkpoint, tmp_path, method):
    out = str(tmp_path / f'{method}.pth')
    options = as_cli_options(posthoc_options(tiny_voc))
    extra = ['--fit-cfg', 'epochs=2'] if method == 'lts' else ['--calibrator-cfg', 'max_iter=20']
    result = fit_tool.main([POSTHOC.format(method), checkpoint, '--out', out, *extra, '--cfg-options', *options])
    cal = load_calibrator(out)
    assert cal.meta['resolution'] == ('native' if method == 'lts' else 'label')
    assert result['after']['NLL'] < result['before']['NLL']
    cfg = Config.fromfile(POSTHOC.format(method))
    cfg.merge_from_dict(posthoc_options(tiny_voc))
    cfg.model.calibrator.file = out
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    assert type(model.calibrator).__name__ == result['method']
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert model(x, mode='tensor').shape == (1, 21, 2, 2)


def test_cli_errors(tiny_voc, checkpoint, tmp_path):
    options = as_cli_options(tiny_run_options(tiny_voc))
    with pytest.raises(ValueError, match='--method is required'):
        fit_tool.main([DEMO_CONFIG, checkpoint, '--cfg-options', *options])
    with pytest.raises(ValueError, match=r'config has no calib_dataloader \(it has \['):
        fit_tool.main([DEMO_CONFIG, checkpoint, '--method', 'ts', '--split', 'calib', '--cfg-options', *options])
    posthoc = as_cli_options(posthoc_options(tiny_voc))
    with pytest.raises(ValueError, match="differs from the config's model.calibrator.method"):
        fit_tool.main([POSTHOC.format('ts'), checkpoint, '--method', 'vs', '--cfg-options', *posthoc])
    with pytest.raises(ValueError, match="'tsb' does not apply to a 21-class head"):
        fit_tool.main([DEMO_CONFIG, checkpoint, '--method', 'tsb', '--out', str(tmp_path / 'x.pth'),
                       '--cfg-options', *options])
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        fit_tool.main([DEMO_CONFIG, str(tmp_path / 'missing.pth'), '--method', 'ts'])


def test_default_output_is_next_to_the_checkpoint():
    assert fit_tool.default_out(osp.join('work_dirs', 'run', 'iter_600.pth'), 'cts') == \
        osp.join('work_dirs', 'run', 'iter_600_calib-cts.pth')


# ----------------------------------------------------------------------------------------------- binary heads
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
    result = fit_tool.fit_calibrator(model, batches, method, max_pixels=200)
    assert isinstance(result['calibrator'], cls)
    z, y = next(iter(result['source']))
    assert z.shape == (200, 1) and set(y.unique().tolist()) <= {0, 1}
    assert z.min() < 0 or z.max() > 1  # logits, not the sigmoid probabilities mmseg stores
    with torch.no_grad():  # the stored pixels are the pre-sigmoid logits of predict's seg_logits
        data = model.data_preprocessor(batches[0], False)
        probs = model.predict(data['inputs'], data['data_samples'])[0].seg_logits.data[0]
    valid = batches[0]['data_samples'][0].gt_sem_seg.data[0] != 255
    picked = torch.sigmoid(z[:, 0])
    assert torch.isin(picked, probs[valid]).all()
    assert result['after']['NLL'] < result['before']['NLL']
    with pytest.raises(ValueError, match="'lts' does not apply to a one-channel"):
        fit_tool.fit_calibrator(model, batches, 'lts')


# --------------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize('method,cls', [('ts', TemperatureScaling), ('cts', ClasswiseTemperatureScaling),
                                        ('vs', VectorScaling)])
def test_exported_checkpoint_gives_the_calibrated_logits(tiny_voc, checkpoint, tmp_path, method, cls):
    calibrator_file = str(tmp_path / f'{method}.pth')
    options = as_cli_options(posthoc_options(tiny_voc))
    fit_args = [POSTHOC.format(method), checkpoint, '--out', calibrator_file, '--max-pixels-per-image', '200']
    if method != 'ts':
        fit_args += ['--calibrator-cfg', 'max_iter=20']
    fit_tool.main(fit_args + ['--cfg-options', *options])
    exported = str(tmp_path / 'exported.pth')
    export_tool.main([DEMO_CONFIG, checkpoint, calibrator_file, exported])
    payload = torch.load(exported, weights_only=True)  # plain data only
    assert payload['meta']['calibseg_export']['calibrator'] == cls.__name__
    assert payload['meta']['iter'] == 2 and payload['meta']['dataset_meta']['classes'][3] == 'c3'

    init_default_scope('mmseg')
    plain = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    plain.load_state_dict(payload['state_dict'])
    cfg = Config.fromfile(POSTHOC.format(method))
    cfg.model.calibrator.file = calibrator_file
    calibrated = MODELS.build(cfg.model)
    calibrated.load_state_dict(torch.load(checkpoint, weights_only=False)['state_dict'])
    plain.eval()
    calibrated.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = calibrated(x, mode='tensor')
        got = plain(x, mode='tensor')
    assert expected.std() > 0.3  # not trivially small logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_lts_cannot_be_exported(tiny_voc, checkpoint, tmp_path):
    calibrator_file = str(tmp_path / 'lts.pth')
    fit_tool.main([POSTHOC.format('lts'), checkpoint, '--out', calibrator_file, '--fit-cfg', 'epochs=1',
                   '--cfg-options', *as_cli_options(posthoc_options(tiny_voc))])
    with pytest.raises(ValueError, match='cannot be folded into the classifier convolution'):
        export_tool.main([DEMO_CONFIG, checkpoint, calibrator_file, str(tmp_path / 'x.pth')])
    assert not osp.exists(tmp_path / 'x.pth')
    assert math.isfinite(load_calibrator(calibrator_file).meta['fit_metrics']['after']['NLL'])


def test_lts_loss_is_the_nll_of_the_resized_logits(tiny_voc, checkpoint):
    """--lts-loss input: the objective is the NLL that the test metrics measure (logits resized to the input)."""
    cfg, model = plain_model(tiny_voc, checkpoint, POSTHOC.format('lts'))
    loader = fit_tool.build_loader(cfg, 'calib_dataloader', 0)
    result = fit_tool.fit_calibrator(model, loader, 'lts', fit_cfg=dict(epochs=1, lr=1e-12))  # T stays 1
    nll_sum, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            sample = model.predict(data['inputs'], data['data_samples'])[0]
            labels = sample.gt_sem_seg.data[0]
            nll_sum += float(F.cross_entropy(sample.seg_logits.data[None], labels[None].long(), ignore_index=255,
                                             reduction='sum'))
            count += int((labels != 255).sum())
    info = result['calibrator'].fit_info
    assert info['num_pixels'] == count  # every labelled input pixel, not only the 2x2 native ones
    assert math.isclose(info['epoch_nll'][0], nll_sum / count, rel_tol=1e-5)
    assert math.isclose(result['before']['NLL'], nll_sum / count, rel_tol=1e-5)
    native = fit_tool.fit_calibrator(model, loader, 'lts', fit_cfg=dict(epochs=1), lts_loss='native')
    assert native['calibrator'].fit_info['num_pixels'] <= 5 * 4  # labels at the 2x2 logit pixels of 5 images


# ---------------------------------------------------------------------------------------------- demo script
def test_posthoc_demo_script(tiny_voc, checkpoint, tmp_path):
    demo = load_tool('posthoc_demo')
    root = osp.dirname(osp.dirname(tiny_voc))  # the folder holding VOCdevkit
    results = demo.main(['--checkpoints', checkpoint, '--methods', 'ts', '--data-root', root, '--calib-root', root,
                         '--work-dir', str(tmp_path / 'demo'), '--no-write'])
    rows = results[checkpoint]
    assert set(rows) == {'generated', 'val-half'}
    for table in rows.values():
        assert set(table) == {'uncalibrated', 'TS'}
        assert table['TS']['test']['mIoU'] == table['uncalibrated']['test']['mIoU']  # TS keeps the predictions
        assert table['TS']['fitted'].startswith('T = ')
    assert osp.isfile(tmp_path / 'demo' / 'configs' / 'fcn_r18-d16_ce-ts_1xb8-600it_demo-voc12aug-96x96_val-half.py')
