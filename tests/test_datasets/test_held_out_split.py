"""HeldOutSplit: complementary, deterministic parts of one dataset."""
import os.path as osp

import pytest
from mmseg.registry import DATASETS

import calibseg  # noqa: F401
from calibseg.datasets import held_out_indices


def _voc(root):
    return dict(type='PascalVOCDataset', data_root=root,
                data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
                ann_file='ImageSets/Segmentation/aug.txt', pipeline=[])


def test_parts_are_complementary_and_deterministic(tiny_voc):
    train = DATASETS.build(dict(type='HeldOutSplit', dataset=_voc(tiny_voc), part='train', held_out=3, seed=1))
    held = DATASETS.build(dict(type='HeldOutSplit', dataset=_voc(tiny_voc), part='held_out', held_out=3, seed=1))
    full = DATASETS.build(_voc(tiny_voc))
    assert len(held) == 3 and len(train) == len(full) - 3
    train_paths = [train[i]['img_path'] for i in range(len(train))]
    held_paths = [held[i]['img_path'] for i in range(len(held))]
    assert not set(train_paths) & set(held_paths)
    assert sorted(train_paths + held_paths) == sorted(full[i]['img_path'] for i in range(len(full)))
    again = DATASETS.build(dict(type='HeldOutSplit', dataset=_voc(tiny_voc), part='held_out', held_out=3, seed=1))
    assert [again[i]['img_path'] for i in range(3)] == held_paths
    assert held.metainfo['classes'] == full.metainfo['classes']
    assert osp.basename(held.get_data_info(0)['img_path']) == osp.basename(held_paths[0])


def test_fraction_and_bad_arguments():
    assert len(held_out_indices(10, 0.25)) == 2  # round(2.5) is 2
    assert held_out_indices(10, 3, seed=0) == held_out_indices(10, 3, seed=0)
    with pytest.raises(ValueError, match='leaves no images'):
        held_out_indices(3, 3)
    with pytest.raises(ValueError, match='in \\(0, 1\\)'):
        held_out_indices(10, 1.5)
    with pytest.raises(TypeError, match='held_out must be'):
        held_out_indices(10, '3')
    with pytest.raises(ValueError, match='part must be one of'):
        DATASETS.build(dict(type='HeldOutSplit', dataset=dict(type='PascalVOCDataset'), part='val', held_out=1))
