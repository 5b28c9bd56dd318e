"""Soft saliency masks through a pipeline: grey / 255, bilinear SoftMaskResize, alignment under flips and crops,
PackSaliencyInputs, and no way into the metrics. Expected values come from cv2/numpy computed here."""
import copy

import cv2
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import METRICS, TRANSFORMS
from PIL import Image

import calibseg  # noqa: F401  (registers the transforms and metrics)
from calibseg.datasets.transforms import PackSaliencyInputs, SoftMaskResize

H, W = 24, 20


@pytest.fixture
def pair(tmp_path):
    """A coordinate-coded image (R = 10 row, G = 10 col; lossless PNG) and a grey mask with many levels."""
    rows, cols = np.mgrid[0:H, 0:W]
    image = np.stack([rows * 10, cols * 10, np.full_like(rows, 7)], axis=-1).astype(np.uint8)
    rng = np.random.default_rng(0)
    grey = np.where(rng.random((H, W)) < 0.5, 0, 255).astype(np.uint8)
    edge = rng.random((H, W)) < 0.4
    grey[edge] = rng.integers(1, 255, int(edge.sum()))  # anti-aliased levels, on both sides of 128
    Image.fromarray(image).save(tmp_path / 'img.png')
    Image.fromarray(grey).save(tmp_path / 'mask.png')
    return dict(img_path=str(tmp_path / 'img.png'), seg_map_path=str(tmp_path / 'mask.png'), reduce_zero_label=False,
                seg_fields=[])


def _run(pipeline, info):
    init_default_scope('mmseg')
    return Compose([TRANSFORMS.build(t) for t in pipeline])(copy.deepcopy(info))


def _grey(info):
    """The mask as cv2 reads it, independently of mmcv."""
    return cv2.imread(info['seg_map_path'], cv2.IMREAD_GRAYSCALE)


def test_soft_mask_is_grey_over_255_beside_the_binarised_labels(pair):
    out = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True)], pair)
    grey = _grey(pair)
    assert out['gt_soft_mask'].dtype == np.float32
    np.testing.assert_allclose(out['gt_soft_mask'], grey.astype(np.float64) / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(out['gt_seg_map'], (grey > 128).astype(np.uint8))
    assert out['seg_fields'] == ['gt_seg_map', 'gt_soft_mask']
    hard = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations')], pair)
    assert 'gt_soft_mask' not in hard and hard['seg_fields'] == ['gt_seg_map']
    np.testing.assert_array_equal(hard['gt_seg_map'], out['gt_seg_map'])


def test_flip_and_crop_keep_the_soft_mask_aligned(pair):
    """Every output pixel's source coordinates are read from the image; soft and labels must come from there."""
    grey = _grey(pair)
    np.random.seed(3)
    for flip in ('horizontal', 'vertical'):
        for _ in range(4):
            out = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
                        dict(type='RandomCrop', crop_size=(13, 9)),
                        dict(type='RandomFlip', prob=1.0, direction=flip)], pair)
            img = out['img']  # BGR
            src_row, src_col = img[..., 2].astype(int) // 10, img[..., 1].astype(int) // 10
            assert out['gt_soft_mask'].shape == (13, 9) == out['gt_seg_map'].shape
            np.testing.assert_allclose(out['gt_soft_mask'], grey[src_row, src_col] / 255.0, rtol=0, atol=1e-7)
            np.testing.assert_array_equal(out['gt_seg_map'], grey[src_row, src_col] > 128)


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_soft_mask_resize_is_bilinear_and_labels_stay_nearest(pair, backend):
    grey = _grey(pair)
    size = (31, 17)  # (w, h): up in width, down in height
    out = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
                dict(type='SoftMaskResize', scale=size, keep_ratio=False, backend=backend)], pair)
    plain = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'),
                  dict(type='Resize', scale=size, keep_ratio=False, backend=backend)], pair)
    np.testing.assert_array_equal(out['img'], plain['img'])
    np.testing.assert_array_equal(out['gt_seg_map'], plain['gt_seg_map'])  # the label map: nearest, as Resize
    if backend == 'cv2':
        expected = cv2.resize(grey.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) / 255.0
    else:
        expected = np.asarray(Image.fromarray(grey.astype(np.float32)).resize(size, Image.BILINEAR)) / 255.0
    assert out['gt_soft_mask'].shape == (17, 31) and out['gt_soft_mask'].dtype == np.float32
    np.testing.assert_allclose(out['gt_soft_mask'], expected, rtol=0, atol=1e-6)
    assert len(np.unique(out['gt_soft_mask'])) > len(np.unique(grey))  # interpolated, not nearest


def test_soft_mask_resize_keep_ratio_follows_the_image(pair):
    grey = _grey(pair)
    out = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
                dict(type='SoftMaskResize', scale=(40, 40), keep_ratio=True),
                dict(type='RandomFlip', prob=1.0, direction='horizontal'), dict(type='PackSaliencyInputs')], pair)
    sample = out['data_samples']
    h, w = sample.img_shape
    assert (h, w) == (40, 33)  # 24x20 scaled by 40/24
    expected = cv2.resize(grey.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)[:, ::-1] / 255.0
    np.testing.assert_allclose(sample.gt_soft_mask.data[0].numpy(), expected, rtol=0, atol=1e-6)
    assert sample.gt_sem_seg.data.shape == (1, h, w)


def test_pack_saliency_inputs(pair):
    out = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
                dict(type='RandomFlip', prob=1.0), dict(type='PackSaliencyInputs')], pair)
    sample = out['data_samples']
    soft = sample.gt_soft_mask.data
    assert soft.dtype == torch.float32 and soft.shape == (1, H, W) and soft.is_contiguous()
    np.testing.assert_allclose(soft[0].numpy(), _grey(pair)[:, ::-1] / 255.0, rtol=0, atol=1e-7)
    assert sample.gt_sem_seg.data.dtype == torch.int64
    assert sample.metainfo['flip'] is True
    hard = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'), dict(type='PackSaliencyInputs')],
                pair)
    mmseg_pack = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'),
                       dict(type='PackSegInputs')], pair)
    assert 'gt_soft_mask' not in hard['data_samples']
    assert torch.equal(hard['inputs'], mmseg_pack['inputs'])
    assert hard['data_samples'].metainfo == mmseg_pack['data_samples'].metainfo
    assert isinstance(TRANSFORMS.build(dict(type='PackSaliencyInputs')), PackSaliencyInputs)
    assert isinstance(TRANSFORMS.build(dict(type='SoftMaskResize', scale=(8, 8))), SoftMaskResize)


def test_a_nearest_resize_of_the_soft_mask_is_refused(pair):
    with pytest.raises(ValueError, match=r"mask\.png was resized .*nearest neighbour.*SoftMaskResize"):
        _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
              dict(type='Resize', scale=(16, 16), keep_ratio=False), dict(type='PackSaliencyInputs')], pair)
    with pytest.raises(ValueError, match='SoftMaskResize'):
        _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
              dict(type='RandomResize', scale=(16, 16), ratio_range=(0.5, 2.0)), dict(type='PackSaliencyInputs')],
             pair)
    out = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
                dict(type='RandomResize', scale=(16, 16), ratio_range=(0.5, 2.0), resize_type='SoftMaskResize'),
                dict(type='PackSaliencyInputs')], pair)
    assert out['data_samples'].gt_soft_mask.shape == out['data_samples'].gt_sem_seg.shape
    # a resize of the image before the masks are loaded (test pipelines) does not concern the mask
    out = _run([dict(type='LoadImageFromFile'), dict(type='Resize', scale=(16, 16), keep_ratio=False),
                dict(type='LoadBinaryAnnotations', soft=True), dict(type='PackSaliencyInputs')], pair)
    assert out['data_samples'].gt_soft_mask.shape == (H, W)


def test_pack_refuses_a_soft_mask_that_lost_its_label_map(pair):
    init_default_scope('mmseg')
    results = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True)], pair)
    results['gt_soft_mask'] = results['gt_soft_mask'][:, :-1]
    with pytest.raises(ValueError, match=r'soft mask of .*mask\.png is \(24, 19\) but its label map is \(24, 20\)'):
        PackSaliencyInputs()(results)


def test_soft_masks_never_reach_the_metrics(pair):
    """SaliencyMetric and BinaryCalibrationMetric read gt_sem_seg only: a soft mask in the sample changes nothing."""
    init_default_scope('mmseg')
    soft = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
                 dict(type='PackSaliencyInputs')], pair)['data_samples']
    hard = _run([dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'), dict(type='PackSegInputs')],
                pair)['data_samples']
    probs = torch.rand((1, H, W), generator=torch.Generator().manual_seed(0))
    results = {}
    for name, sample in (('soft', soft), ('hard', hard)):
        sample.seg_logits = PixelData(data=probs.clone())
        values = {}
        for cfg in (dict(type='SaliencyMetric'), dict(type='BinaryCalibrationMetric')):
            metric = METRICS.build(cfg)
            metric.dataset_meta = dict(classes=('background', 'foreground'))
            metric.process({}, [sample.to_dict()])
            values.update(metric.evaluate(1))
        results[name] = values
    assert results['soft'] == results['hard'] and len(results['hard']) > 5
