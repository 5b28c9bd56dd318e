"""calibseg.datasets.demo (the demo-data generator): layouts, determinism, content, mmseg loading."""
import hashlib
import os
import os.path as osp
import re

import numpy as np
import pytest
from PIL import Image

from calibseg.datasets import demo as gdd

N_TRAIN, N_VAL, N_DUTS_TR, N_DUTS_TE, SIZE = 6, 3, 4, 2, 32


def _generate(root, seed=0):
    return gdd.generate_demo_data(str(root), voc_train=N_TRAIN, voc_val=N_VAL, duts_train=N_DUTS_TR,
                                  duts_test=N_DUTS_TE, size=SIZE, seed=seed)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo_data')
    out = _generate(root)
    return root, out


def _voc(root):
    return osp.join(str(root), 'VOCdevkit', 'VOC2012')


def _read_list(root, split):
    with open(osp.join(_voc(root), 'ImageSets', 'Segmentation', split + '.txt')) as f:
        return f.read().splitlines()


def _label(root, i):
    with Image.open(osp.join(_voc(root), 'SegmentationClassAug', i + '.png')) as im:
        return np.array(im)


def _tree_digest(root):
    digest = {}
    for dirpath, _, files in os.walk(str(root)):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                digest[osp.relpath(path, str(root))] = hashlib.sha256(f.read()).hexdigest()
    return digest


def _stems(folder, ext):
    names = os.listdir(folder)
    assert all(n.endswith(ext) for n in names), names
    return sorted(n[:-len(ext)] for n in names)


# ------------------------------------------------------------------------------- determinism
def test_deterministic_bytes(data, tmp_path):
    root, _ = data
    _generate(tmp_path / 'again')
    first, second = _tree_digest(root), _tree_digest(tmp_path / 'again')
    n_palette = N_TRAIN - len(_read_list(root, 'aug')) + N_VAL  # SegmentationClass/*.png
    assert len(first) == 2 * (N_TRAIN + N_VAL) + n_palette + 3 + 2 * (N_DUTS_TR + N_DUTS_TE)
    assert first == second
    _generate(tmp_path / 'other', seed=1)
    other = _tree_digest(tmp_path / 'other')
    images = [v for k, v in first.items() if k.endswith(('.jpg', '.png'))]
    assert set(other.values()).isdisjoint(images)


# sha256 over the sorted "path:sha256" lines of the `data` fixture's files, measured with numpy 2.4.6 and Pillow
# 13.0 (the generator moved from tools/ into the package without changing a byte). The demo's figures are
# reproducible only while this holds: if it fails after a numpy/Pillow upgrade, the demo data (and so the README's
# figures) changed.
PINNED_TREE = 'a6be3d4ac1643b0859f86893ea5fbdd7263ac8237fec36c9117b6a995dab37d4'


def test_generated_bytes_are_pinned(data):
    root, _ = data
    listing = ''.join(f'{path}:{digest}\n' for path, digest in sorted(_tree_digest(root).items()))
    assert hashlib.sha256(listing.encode()).hexdigest() == PINNED_TREE, (
        'the demo-data generator wrote different bytes for seed 0 (a numpy or Pillow version change?): the demo '
        'data and the figures measured on it are no longer those of the README')


# ------------------------------------------------------------------------------- VOC
def test_voc_layout_and_splits(data):
    root, out = data
    voc = _voc(root)
    assert sorted(os.listdir(voc)) == ['ImageSets', 'JPEGImages', 'SegmentationClass',
                                       'SegmentationClassAug']
    assert sorted(os.listdir(osp.join(voc, 'ImageSets'))) == ['Segmentation']
    lists = sorted(os.listdir(osp.join(voc, 'ImageSets', 'Segmentation')))
    assert lists == ['aug.txt', 'train.txt', 'val.txt']
    train, aug, val = (_read_list(root, s) for s in ('train', 'aug', 'val'))
    assert out['voc'] == {'train': train, 'aug': aug, 'val': val}
    for ids in (train, aug, val):
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(re.fullmatch(r'20(0[7-9]|1[01])_\d{6}', i) for i in ids), ids
    assert len(train) >= 1 and len(train) + len(aug) == N_TRAIN and len(val) == N_VAL
    assert not set(train) & set(aug) and not set(train) & set(val) and not set(aug) & set(val)
    everything = sorted(train + aug + val)
    assert _stems(osp.join(voc, 'JPEGImages'), '.jpg') == everything
    assert _stems(osp.join(voc, 'SegmentationClassAug'), '.png') == everything
    # as in VOC 2012: the palette annotations exist for the VOC train/val ids, not the SBD extras
    assert _stems(osp.join(voc, 'SegmentationClass'), '.png') == sorted(train + val)


def test_voc_images_and_labels(data):
    root, _ = data
    voc = _voc(root)
    train, aug, val = (_read_list(root, s) for s in ('train', 'aug', 'val'))
    allowed = set(range(21)) | {255}
    seen = set()
    for i in train + aug + val:
        with Image.open(osp.join(voc, 'JPEGImages', i + '.jpg')) as im:
            assert im.format == 'JPEG' and im.mode == 'RGB' and im.size == (SIZE, SIZE)
        with Image.open(osp.join(voc, 'SegmentationClassAug', i + '.png')) as im:
            assert im.format == 'PNG' and im.mode == 'L' and im.size == (SIZE, SIZE)
            lab = np.array(im)
        assert set(np.unique(lab).tolist()) <= allowed
        assert (lab == 0).any()  # the background is always visible
        if i in aug:
            assert not (lab == 255).any()  # SBD-style masks have no void outlines
        else:
            with Image.open(osp.join(voc, 'SegmentationClass', i + '.png')) as im:
                assert im.mode == 'P' and im.size == (SIZE, SIZE)
                np.testing.assert_array_equal(np.array(im), lab)
        if i not in val:
            seen |= set(np.unique(lab).tolist())
    assert set(range(1, 21)) <= seen, sorted(set(range(1, 21)) - seen)
    # the VOC-style annotations have 255 boundary bands somewhere
    assert any((_label(root, i) == 255).any() for i in train + val)


def test_voc_palette(data):
    root, _ = data
    i = _read_list(root, 'train')[0]
    with Image.open(osp.join(_voc(root), 'SegmentationClass', i + '.png')) as im:
        assert im.mode == 'P'
        pal = np.array(im.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
    assert len(pal) == 256
    np.testing.assert_array_equal(pal, gdd.VOC_PALETTE)
    expected = {0: [0, 0, 0], 1: [128, 0, 0], 15: [192, 128, 128], 20: [0, 64, 128],
                255: [224, 224, 192]}
    assert {k: pal[k].tolist() for k in expected} == expected


# ------------------------------------------------------------------------------- DUTS
def test_duts_layout_and_masks(data):
    root, out = data
    duts = osp.join(str(root), 'DUTS')
    assert sorted(os.listdir(duts)) == ['DUTS-TE', 'DUTS-TR']
    soft = total = 0
    for split, n in (('DUTS-TR', N_DUTS_TR), ('DUTS-TE', N_DUTS_TE)):
        assert sorted(os.listdir(osp.join(duts, split))) == [split + '-Image', split + '-Mask']
        names = _stems(osp.join(duts, split, split + '-Image'), '.jpg')
        assert len(names) == n and names == out['duts'][split]
        assert _stems(osp.join(duts, split, split + '-Mask'), '.png') == names
        for name in names:
            with Image.open(osp.join(duts, split, split + '-Image', name + '.jpg')) as im:
                assert im.format == 'JPEG' and im.mode == 'RGB' and im.size == (SIZE, SIZE)
            with Image.open(osp.join(duts, split, split + '-Mask', name + '.png')) as im:
                assert im.format == 'PNG' and im.mode == 'L' and im.size == (SIZE, SIZE)
                mask = np.array(im)
            assert (mask == 255).any() and (mask == 0).any()
            soft += int(((mask > 0) & (mask < 255)).sum())
            total += mask.size
    assert 0 < soft < 0.08 * total  # binary masks with a few anti-aliased edge pixels


def test_duts_soft_edges_are_rare_at_default_size():
    fracs = [float(((m > 0) & (m < 255)).mean()) for m in
             (gdd.render_duts_sample(np.random.default_rng([0, k]), 96)[1] for k in range(8))]
    assert max(fracs) < 0.05 and np.mean(fracs) > 0.001, fracs


# ------------------------------------------------------------------------------- options
def test_only_one_dataset_leaves_the_other_unchanged(data, tmp_path):
    root, _ = data
    out = gdd.generate_demo_data(str(tmp_path), voc_train=N_TRAIN, voc_val=N_VAL, size=SIZE, only='voc')
    assert sorted(out) == ['voc'] and sorted(os.listdir(str(tmp_path))) == ['VOCdevkit']
    full = {k: v for k, v in _tree_digest(root).items() if k.startswith('VOCdevkit')}
    assert _tree_digest(tmp_path) == full  # independent random streams: DUTS does not shift VOC's
    with pytest.raises(ValueError, match="only must be one of"):
        gdd.generate_demo_data(str(tmp_path), only='ade20k')


def test_cityscapes_on_request(data, tmp_path):
    out = gdd.generate_demo_data(str(tmp_path / 'only'), only='cityscapes')
    assert sorted(out) == ['cityscapes'] and sorted(os.listdir(str(tmp_path / 'only'))) == ['cityscapes']
    assert out['cityscapes']['train'] and out['cityscapes']['val']
    root, _ = data
    out = gdd.generate_demo_data(str(tmp_path / 'all'), voc_train=N_TRAIN, voc_val=N_VAL, duts_train=N_DUTS_TR,
                                 duts_test=N_DUTS_TE, size=SIZE, cityscapes=True)
    assert sorted(out) == ['cityscapes', 'duts', 'voc']
    with_city = {k: v for k, v in _tree_digest(tmp_path / 'all').items() if not k.startswith('cityscapes')}
    assert with_city == _tree_digest(root)  # its own random stream: VOC and DUTS bytes unchanged


# ------------------------------------------------------------------------------- mmseg
def test_mmseg_pascal_voc_dataset_loads(data):
    from mmseg.datasets import PascalVOCDataset
    from mmseg.utils import register_all_modules
    register_all_modules()
    root, _ = data
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')]
    for split, prefix in (('train', 'SegmentationClassAug'), ('aug', 'SegmentationClassAug'),
                          ('val', 'SegmentationClass')):
        ds = PascalVOCDataset(
            data_root=_voc(root), ann_file=f'ImageSets/Segmentation/{split}.txt',
            data_prefix=dict(img_path='JPEGImages', seg_map_path=prefix), pipeline=pipeline)
        ids = _read_list(root, split)
        assert len(ds) == len(ids)
        for k in range(len(ds)):
            sample = ds[k]
            img = sample['inputs']
            gt = sample['data_samples'].gt_sem_seg.data
            assert tuple(img.shape) == (3, SIZE, SIZE)
            assert tuple(gt.shape) == (1, SIZE, SIZE)
            assert set(gt.unique().tolist()) <= set(range(21)) | {255}
            assert osp.basename(sample['data_samples'].img_path) == ids[k] + '.jpg'
            np.testing.assert_array_equal(gt[0].numpy(), _label(root, ids[k]))
