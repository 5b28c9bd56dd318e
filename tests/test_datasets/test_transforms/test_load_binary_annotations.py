"""LoadBinaryAnnotations: >threshold binarisation to {0, 1}, grayscale decoding of any mask mode."""
import numpy as np
import pytest
from mmseg.registry import TRANSFORMS
from PIL import Image

from calibseg.datasets.transforms.load_binary_annotations import LoadBinaryAnnotations

VALUES = np.array([[0, 1, 127, 128], [129, 200, 254, 255]], np.uint8)


def _load(path, **options):
    results = dict(seg_map_path=str(path), reduce_zero_label=False, seg_fields=[])
    return LoadBinaryAnnotations(**options)(results)


def test_default_threshold_is_strictly_above_128(tmp_path):
    Image.fromarray(VALUES).save(tmp_path / 'm.png')
    out = _load(tmp_path / 'm.png')
    assert out['gt_seg_map'].dtype == np.uint8
    np.testing.assert_array_equal(out['gt_seg_map'], [[0, 0, 0, 0], [1, 1, 1, 1]])
    assert out['seg_fields'] == ['gt_seg_map']
    np.testing.assert_array_equal(_load(tmp_path / 'm.png', threshold=0)['gt_seg_map'], [[0, 1, 1, 1], [1, 1, 1, 1]])


def test_rgb_and_palette_masks_use_the_stored_colour(tmp_path):
    Image.fromarray(np.repeat(VALUES[..., None], 3, axis=2)).save(tmp_path / 'rgb.png')
    palette = Image.fromarray((VALUES > 128).astype(np.uint8), mode='P')  # indices 0/1, colours black/white
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.save(tmp_path / 'pal.png')
    for name in ('rgb.png', 'pal.png'):
        np.testing.assert_array_equal(_load(tmp_path / name)['gt_seg_map'], [[0, 0, 0, 0], [1, 1, 1, 1]])


def test_label_map_and_build(tmp_path):
    Image.fromarray(VALUES).save(tmp_path / 'm.png')
    transform = TRANSFORMS.build(dict(type='LoadBinaryAnnotations', threshold=200))
    results = transform(dict(seg_map_path=str(tmp_path / 'm.png'), reduce_zero_label=False, seg_fields=[],
                             label_map={1: 0, 0: 1}))
    np.testing.assert_array_equal(results['gt_seg_map'], [[1, 1, 1, 1], [1, 1, 0, 0]])
    assert 'threshold=200' in repr(transform)


def test_errors(tmp_path):
    for bad in (-1, 255, 'high', True):
        with pytest.raises(ValueError, match='threshold'):
            LoadBinaryAnnotations(threshold=bad)
    with pytest.raises(TypeError):
        TRANSFORMS.build(dict(type='LoadBinaryAnnotations', reduce_zero_label=True))
    Image.fromarray(VALUES).save(tmp_path / 'm.png')
    with pytest.raises(ValueError, match='reduce_zero_label'):
        LoadBinaryAnnotations()(dict(seg_map_path=str(tmp_path / 'm.png'), reduce_zero_label=True, seg_fields=[]))


def test_truncated_mask_names_the_file(tmp_path):
    mask = np.where(np.random.default_rng(0).random((40, 40)) < 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / 'cut.png')
    data = (tmp_path / 'cut.png').read_bytes()
    (tmp_path / 'cut.png').write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(OSError, match=r'cut\.png'):
        _load(tmp_path / 'cut.png')
    (tmp_path / 'junk.png').write_bytes(b'not an image at all')
    with pytest.raises(OSError, match=r'junk\.png'):
        _load(tmp_path / 'junk.png')


def test_mask_of_another_size_than_its_image_is_refused(tmp_path):
    Image.fromarray(VALUES).save(tmp_path / 'm.png')  # 4x2 (WxH)
    results = dict(seg_map_path=str(tmp_path / 'm.png'), reduce_zero_label=False, seg_fields=[],
                   img_path='img.jpg', ori_shape=(3, 4), img_shape=(3, 4))
    with pytest.raises(ValueError, match=r'm\.png is 4x2 .*img\.jpg is 4x3'):
        LoadBinaryAnnotations()(results)
    results.update(ori_shape=(2, 4), img_shape=(8, 16))  # a resize before loading the mask is fine
    assert LoadBinaryAnnotations()(results)['gt_seg_map'].shape == (2, 4)


@pytest.mark.parametrize('high', [1, 100, 128])
def test_label_map_masks_that_would_become_background_are_refused(tmp_path, high):
    mask = np.zeros((6, 6), np.uint8)
    mask[2:4, 2:4] = high
    Image.fromarray(mask).save(tmp_path / 'lm.png')
    with pytest.raises(ValueError, match=rf'lm\.png holds values up to {high} .*all background'):
        _load(tmp_path / 'lm.png')
    lower = high - 1
    np.testing.assert_array_equal(_load(tmp_path / 'lm.png', threshold=lower)['gt_seg_map'], mask > lower)
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / 'empty.png')  # no salient object: fine
    assert not _load(tmp_path / 'empty.png')['gt_seg_map'].any()


def test_soft_option(tmp_path):
    """soft=True keeps grey / 255 (float32) beside the unchanged binarised labels; refuses relabelled classes."""
    Image.fromarray(VALUES).save(tmp_path / 'm.png')
    out = _load(tmp_path / 'm.png', soft=True)
    np.testing.assert_array_equal(out['gt_seg_map'], _load(tmp_path / 'm.png')['gt_seg_map'])
    assert out['gt_soft_mask'].dtype == np.float32 and out['seg_fields'] == ['gt_seg_map', 'gt_soft_mask']
    np.testing.assert_allclose(out['gt_soft_mask'], VALUES / 255.0, rtol=0, atol=1e-7)
    assert out['soft_mask_scale'] is None
    assert 'soft=True' in repr(LoadBinaryAnnotations(soft=True))
    with pytest.raises(ValueError, match='soft must be a bool'):
        LoadBinaryAnnotations(soft=1)
    results = dict(seg_map_path=str(tmp_path / 'm.png'), reduce_zero_label=False, seg_fields=[],
                   label_map={0: 1, 1: 0})
    with pytest.raises(ValueError, match=r'soft=True\): the dataset relabels classes'):
        LoadBinaryAnnotations(soft=True)(results)
    results.update(label_map={0: 0, 1: 1}, seg_fields=[])  # an identity map is fine
    assert 'gt_soft_mask' in LoadBinaryAnnotations(soft=True)(results)
