"""CorruptImage in a real mmseg pipeline: the image changes, the label map does not, the set is fixed."""
import os.path as osp

import numpy as np
import pytest


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmseg.registry import TRANSFORMS

    import calibseg  # noqa: F401  (registration)
    init_default_scope('mmseg')
    return TRANSFORMS.build(cfg)


def test_unknown_corruption_fails_at_build_listing_the_valid_ones():
    with pytest.raises(ValueError, match='valid corruptions: .*fog.*pixelate'):
        _build(dict(type='CorruptImage', corruption='elastic_transform', severity=2))
    with pytest.raises(ValueError, match='severity'):
        _build(dict(type='CorruptImage', corruption='fog', severity=9))
    with pytest.raises(TypeError):
        _build(dict(type='CorruptImage', corruption='fog', severity=1, sevrity=2))


def _dataset(root: str, corruption=None):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import calibseg  # noqa: F401
    init_default_scope('mmseg')
    pipeline = [dict(type='LoadImageFromFile')]
    if corruption:
        pipeline.append(dict(type='CorruptImage', corruption=corruption[0], severity=corruption[1]))
    pipeline.append(dict(type='LoadAnnotations'))
    return DATASETS.build(dict(type='PascalVOCDataset', data_root=root, data_prefix=dict(
        img_path='JPEGImages', seg_map_path='SegmentationClass'), ann_file='ImageSets/Segmentation/val.txt',
        pipeline=pipeline))


@pytest.mark.parametrize('corruption', [('gaussian_noise', 2), ('fog', 5), ('pixelate', 3)])
def test_pipeline_corrupts_images_and_leaves_labels(tiny_voc, corruption):
    clean, corrupted = _dataset(tiny_voc), _dataset(tiny_voc, corruption)
    for i in range(len(clean)):
        a, b = clean[i], corrupted[i]
        assert b['img'].shape == a['img'].shape and b['img'].dtype == np.uint8
        assert not np.array_equal(a['img'], b['img'])
        assert np.array_equal(a['gt_seg_map'], b['gt_seg_map'])
    again = _dataset(tiny_voc, corruption)
    assert all(np.array_equal(again[i]['img'], corrupted[i]['img']) for i in range(len(clean)))


def test_seed_depends_on_the_file_name_not_the_dataset_root(tiny_voc, tmp_path):
    import shutil

    moved = str(tmp_path / 'elsewhere')
    shutil.copytree(tiny_voc, moved)
    a, b = _dataset(tiny_voc, ('shot_noise', 3)), _dataset(moved, ('shot_noise', 3))
    assert osp.dirname(a[0]['img_path']) != osp.dirname(b[0]['img_path'])
    assert np.array_equal(a[0]['img'], b[0]['img'])
    assert not np.array_equal(a[0]['img'], a[1]['img'][:a[0]['img'].shape[0], :a[0]['img'].shape[1]])


def test_missing_inputs_are_named():
    t = _build(dict(type='CorruptImage', corruption='fog', severity=1))
    with pytest.raises(KeyError, match='after LoadImageFromFile'):
        t(dict(img_path='x.jpg'))
    with pytest.raises(ValueError, match='x.jpg loaded as grayscale'):
        t(dict(img=np.zeros((8, 8), np.uint8), img_path='x.jpg'))
