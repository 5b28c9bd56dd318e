import numpy as np
import pytest

from calibseg.datasets.transforms import CheckLabelRange


def test_accepts_valid_and_ignored_labels():
    labels = np.array([[0, 20], [255, 3]], dtype=np.uint8)
    out = CheckLabelRange(num_classes=21)(dict(gt_seg_map=labels, seg_map_path='a.png'))
    assert out['gt_seg_map'] is labels


def test_reports_out_of_range_values_with_the_file_name():
    labels = np.array([[0, 21], [254, 3]], dtype=np.uint8)
    with pytest.raises(ValueError, match=r'x/2007_000001.png has values \[21, 254\]'):
        CheckLabelRange(num_classes=21)(dict(gt_seg_map=labels, seg_map_path='x/2007_000001.png'))


def test_real_dataset_pipeline_reports_a_bad_file(tiny_voc, tmp_path):
    """A label map written with a value >= num_classes is caught while loading, naming the file."""
    import os.path as osp
    import shutil

    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    from PIL import Image

    root = tmp_path / 'voc'
    shutil.copytree(tiny_voc, root)
    first = open(osp.join(root, 'ImageSets', 'Segmentation', 'val.txt')).read().split()[0]
    bad = osp.join(root, 'SegmentationClassAug', f'{first}.png')
    arr = np.array(Image.open(bad))
    arr[0, 0] = 42
    Image.fromarray(arr).save(bad)
    init_default_scope('mmseg')
    dataset = DATASETS.build(dict(
        type='PascalVOCDataset', data_root=str(root), ann_file='ImageSets/Segmentation/val.txt',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='CheckLabelRange', num_classes=21), dict(type='PackSegInputs')]))
    with pytest.raises(ValueError, match=f'{first}.png has values \\[42\\]'):
        dataset[0]


def test_rejects_bad_num_classes():
    with pytest.raises(ValueError, match='num_classes'):
        CheckLabelRange(num_classes=0)
