"""Saliency datasets: every conventional layout and the repack, built through mmseg's registry."""
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from PIL import Image

import calibseg.datasets.saliency  # noqa: F401  (registers the datasets)
import calibseg.datasets.transforms.load_binary_annotations  # noqa: F401  (registers the transform)

PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'), dict(type='PackSegInputs')]
SIZE = 12

# (dataset type, files relative to its data_root: image pattern, mask pattern, extra build options)
LAYOUTS = {
    'ecssd': ('ECSSDDataset', 'images/{}.jpg', 'ground_truth_mask/{}.png', {}),
    'hku-is': ('HKUISDataset', 'imgs/{}.png', 'gt/{}.png', {}),
    'pascal-s': ('PASCALSDataset', '{}.jpg', '{}.png', {}),
    'pascal-s-two-folders': ('PASCALSDataset', 'imgs/pascal/{}.jpg', 'masks/pascal/{}.png',
                             dict(data_prefix=dict(img_path='imgs/pascal', seg_map_path='masks/pascal'))),
    'dut-omron': ('DUTOMRONDataset', 'DUT-OMRON-image/{}.jpg', 'pixelwiseGT-new-PNG/{}.png', {}),
    'sod': ('SODDataset', 'Image/{}.jpg', 'Mask/{}.png', {}),
    'ecssd-repack': ('ECSSDDataset', 'Image/{}.jpg', 'Mask/{}.png',
                     dict(data_prefix=dict(img_path='Image', seg_map_path='Mask'))),
    'hku-is-repack': ('HKUISDataset', 'Image/{}.jpg', 'Mask/{}.png',
                      dict(data_prefix=dict(img_path='Image', seg_map_path='Mask'))),
    'generic-repack': ('SaliencyDataset', 'Image/{}.jpg', 'Mask/{}.png', {}),
}
NUM_IMAGES = 3


def write_mask(path, index):
    """0/255 mask with soft edge values: 200 (-> 1) and 100 and 128 (-> 0)."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[3:9, 2 + index:8 + index] = 255
    mask[2, 3:8] = 200
    mask[9, 3:8] = 100
    mask[10, 3:8] = 128
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(mask).save(path)
    return mask


def write_image(path, index):
    os.makedirs(osp.dirname(path), exist_ok=True)
    rgb = np.full((SIZE, SIZE, 3), 40 * index, np.uint8)
    Image.fromarray(rgb).save(path)


def write_layout(root, image_pattern, mask_pattern, n=NUM_IMAGES):
    stems = [f'img_{i:03d}' for i in range(n)]
    for i, stem in enumerate(stems):
        write_image(osp.join(root, image_pattern.format(stem)), i)
        write_mask(osp.join(root, mask_pattern.format(stem)), i)
    return stems


def build(dataset_type, root, **options):
    init_default_scope('mmseg')
    return DATASETS.build(dict(type=dataset_type, data_root=str(root), pipeline=PIPELINE, **options))


def check_sample(sample):
    gt = sample['data_samples'].gt_sem_seg.data
    assert gt.shape == (1, SIZE, SIZE)
    assert set(gt.unique().tolist()) == {0, 1}
    row_soft = gt[0, 2, 3:8].tolist(), gt[0, 9, 3:8].tolist(), gt[0, 10, 3:8].tolist()
    assert row_soft == ([1] * 5, [0] * 5, [0] * 5)  # > 128 -> 1: 200 -> 1, 100 and 128 -> 0
    assert sample['inputs'].shape == (3, SIZE, SIZE)


@pytest.mark.parametrize('layout', sorted(LAYOUTS))
def test_every_layout_builds_and_loads_binary_labels(tmp_path, layout):
    dataset_type, image_pattern, mask_pattern, options = LAYOUTS[layout]
    stems = write_layout(tmp_path, image_pattern, mask_pattern)
    dataset = build(dataset_type, tmp_path, **options)
    assert len(dataset) == NUM_IMAGES
    assert dataset.metainfo['classes'] == ('background', 'foreground')
    assert [osp.basename(dataset.get_data_info(i)['img_path']) for i in range(NUM_IMAGES)] == \
        [osp.basename(image_pattern.format(s)) for s in stems]
    check_sample(dataset[NUM_IMAGES - 1])


@pytest.fixture(scope='module')
def duts_root(tmp_path_factory, demo_generator):
    root = tmp_path_factory.mktemp('duts')
    demo_generator.generate_duts(str(root), num_train=3, num_test=2, size=16, seed=0)
    return osp.join(str(root), 'DUTS')


def test_duts_train_and_test_splits(duts_root):
    train = build('DUTSDataset', duts_root)
    test = build('DUTSDataset', duts_root,
                 data_prefix=dict(img_path='DUTS-TE/DUTS-TE-Image', seg_map_path='DUTS-TE/DUTS-TE-Mask'))
    assert (len(train), len(test)) == (3, 2)
    for dataset in (train, test):
        for i in range(len(dataset)):
            gt = dataset[i]['data_samples'].gt_sem_seg.data
            assert set(gt.unique().tolist()) <= {0, 1} and gt.max() == 1


def test_ann_file_selects_a_split(tmp_path):
    stems = write_layout(tmp_path, 'images/{}.jpg', 'ground_truth_mask/{}.png')
    (tmp_path / 'val.txt').write_text(f'{stems[2]}\n{stems[0]}\n')
    dataset = build('ECSSDDataset', tmp_path, ann_file='val.txt')
    assert [osp.basename(dataset.get_data_info(i)['img_path']) for i in range(2)] == \
        [f'{stems[2]}.jpg', f'{stems[0]}.jpg']
    (tmp_path / 'bad.txt').write_text('img_000\nnot_there\n')
    with pytest.raises(ValueError, match='not_there'):
        build('ECSSDDataset', tmp_path, ann_file='bad.txt')


def test_missing_pairs_fail_at_construction_naming_the_files(tmp_path):
    stems = write_layout(tmp_path, 'images/{}.jpg', 'ground_truth_mask/{}.png')
    os.remove(tmp_path / 'ground_truth_mask' / f'{stems[1]}.png')
    write_mask(str(tmp_path / 'ground_truth_mask' / 'orphan.png'), 0)
    with pytest.raises(ValueError) as info:
        build('ECSSDDataset', tmp_path)
    message = str(info.value)
    assert f'{stems[1]}.jpg' in message and 'without a mask' in message
    assert 'orphan.png' in message and 'without an image' in message


def test_layout_errors(tmp_path):
    with pytest.raises(ValueError, match="image folder .*images' does not exist"):
        build('ECSSDDataset', tmp_path)
    (tmp_path / 'images').mkdir()
    (tmp_path / 'ground_truth_mask').mkdir()
    with pytest.raises(ValueError, match='no image/mask pairs'):
        build('ECSSDDataset', tmp_path)
    with pytest.raises(ValueError, match='data_prefix'):
        build('ECSSDDataset', tmp_path, data_prefix=dict(img_path='images'))
    with pytest.raises(ValueError, match='seg_map_suffix'):
        build('PASCALSDataset', tmp_path, img_suffix=('.jpg', '.png'))
    with pytest.raises(TypeError):
        build('ECSSDDataset', tmp_path, reduce_zero_label=True)
    write_layout(tmp_path, 'imgs/{}.png', 'gt/{}.png', n=1)
    write_image(str(tmp_path / 'imgs' / 'img_000.jpg'), 0)
    with pytest.raises(ValueError, match='several image suffixes.*img_000.jpg'):
        build('HKUISDataset', tmp_path)
