"""The generated Cityscapes copy: deterministic, in the real layout, read unchanged by mmseg's CityscapesDataset."""
import filecmp
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from PIL import Image

from calibseg.datasets.demo.cityscapes import CITIES, generate_cityscapes


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('cityscapes_demo'))
    return root, generate_cityscapes(root, seed=3)


def files_under(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def test_layout_and_contents(generated):
    root, names = generated
    assert len(names['train']) == 12 and len(names['val']) == 4
    base = osp.join(root, 'cityscapes')
    expected = []
    for split, stems in names.items():
        for stem in stems:
            city = stem.split('_')[0]
            assert city in CITIES[split]
            expected += [f'leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png',
                         f'gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png']
    assert files_under(base) == sorted(expected)
    seen = set()
    for stem in names['train']:
        city = stem.split('_')[0]
        image = Image.open(osp.join(base, 'leftImg8bit', 'train', city, stem + '_leftImg8bit.png'))
        label = Image.open(osp.join(base, 'gtFine', 'train', city, stem + '_gtFine_labelTrainIds.png'))
        assert image.mode == 'RGB' and label.mode == 'L' and image.size == label.size == (128, 64)
        values = set(np.unique(np.asarray(label)).tolist())
        assert values <= set(range(19)) | {255}
        seen |= values
    assert seen == set(range(19)) | {255}  # every train id occurs in the training split, and ignored pixels


def test_deterministic(generated, tmp_path):
    root, names = generated
    assert generate_cityscapes(str(tmp_path), seed=3) == names
    first, second = osp.join(root, 'cityscapes'), str(tmp_path / 'cityscapes')
    match, mismatch, errors = filecmp.cmpfiles(first, second, files_under(first), shallow=False)
    assert not mismatch and not errors and len(match) == 32
    other = generate_cityscapes(str(tmp_path / 'other'), seed=4, num_train=1, num_val=1)
    stem = other['train'][0]
    path = f'gtFine/train/aachen/{stem}_gtFine_labelTrainIds.png'
    assert not filecmp.cmp(osp.join(first, path), str(tmp_path / 'other' / 'cityscapes' / path), shallow=False)


def test_read_by_mmseg_cityscapes_dataset(generated):
    root, names = generated
    init_default_scope('mmseg')
    for split in ('train', 'val'):
        dataset = DATASETS.build(dict(
            type='CityscapesDataset', data_root=osp.join(root, 'cityscapes'),
            data_prefix=dict(img_path=f'leftImg8bit/{split}', seg_map_path=f'gtFine/{split}'),
            pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))
        assert len(dataset) == len(names[split])
        sample = dataset[0]
        assert tuple(sample['inputs'].shape) == (3, 64, 128)
        labels = sample['data_samples'].gt_sem_seg.data
        assert tuple(labels.shape) == (1, 64, 128) and int(labels.max()) <= 255


@pytest.mark.parametrize('option', [dict(num_train=0), dict(num_val=1.5), dict(height=16), dict(width=True)])
def test_bad_options(tmp_path, option):
    with pytest.raises(ValueError, match=next(iter(option))):
        generate_cityscapes(str(tmp_path), **option)
