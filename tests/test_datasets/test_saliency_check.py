"""calibseg.datasets.saliency_check: problems reported by file name (full decoding), repack (atomic, no overwrite).

The command line (tools/dataset_converters/check_saliency_dataset.py) is exercised in
tests/test_tools/test_check_saliency_dataset.py."""
import os
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from calibseg.datasets import saliency_check as tool

SIZE = 20

# every layout's conventional folders, written out here (not read from the tool's table)
LAYOUT_FILES = {
    'duts-tr': ('DUTS-TR/DUTS-TR-Image/{}.jpg', 'DUTS-TR/DUTS-TR-Mask/{}.png'),
    'duts-te': ('DUTS-TE/DUTS-TE-Image/{}.jpg', 'DUTS-TE/DUTS-TE-Mask/{}.png'),
    'ecssd': ('images/{}.jpg', 'ground_truth_mask/{}.png'),
    'hku-is': ('imgs/{}.png', 'gt/{}.png'),
    'pascal-s': ('{}.jpg', '{}.png'),
    'dut-omron': ('DUT-OMRON-image/{}.jpg', 'pixelwiseGT-new-PNG/{}.png'),
    'sod': ('Image/{}.jpg', 'Mask/{}.png'),
    'repack': ('Image/{}.jpg', 'Mask/{}.png'),
}


def _mask(soft_pixels=0, size=(SIZE, SIZE), high=255):
    mask = np.zeros(size[::-1], np.uint8)
    mask[5:15, 5:15] = high
    mask.reshape(-1)[:soft_pixels] = 100
    return mask


def _write(root, layout, stems=('a', 'b', 'c'), masks=None):
    image_pattern, mask_pattern = LAYOUT_FILES[layout]
    for stem in stems:
        for pattern, array in ((image_pattern, np.full((SIZE, SIZE, 3), 90, np.uint8)),
                               (mask_pattern, _mask() if masks is None else masks.get(stem, _mask()))):
            path = osp.join(root, pattern.format(stem))
            os.makedirs(osp.dirname(path), exist_ok=True)
            Image.fromarray(array).save(path)


@pytest.mark.parametrize('layout', sorted(LAYOUT_FILES))
def test_clean_layouts_pass(tmp_path, layout):
    _write(tmp_path, layout)
    report = tool.check_saliency_dataset(str(tmp_path), layout)
    assert report.ok and len(report.pairs) == 3, report.summary()
    assert 'OK' in report.summary()


def test_missing_pairs_are_reported_by_name(tmp_path):
    _write(tmp_path, 'ecssd')
    os.remove(tmp_path / 'ground_truth_mask' / 'b.png')
    Image.fromarray(_mask()).save(tmp_path / 'ground_truth_mask' / 'lonely.png')
    report = tool.check_saliency_dataset(str(tmp_path), 'ecssd')
    assert (report.images_without_mask, report.masks_without_image) == (['b.jpg'], ['lonely.png'])
    out = report.summary()
    assert not report.ok and 'without a mask' in out and 'b.jpg' in out and 'lonely.png' in out


def test_size_mismatch_soft_and_label_map_masks(tmp_path):
    masks = {
        'a': _mask(size=(SIZE + 2, SIZE)),  # size mismatch
        'b': _mask(soft_pixels=int(0.06 * SIZE * SIZE)),  # 6% soft: reported
        'c': _mask(soft_pixels=int(0.04 * SIZE * SIZE)),  # 4% soft: accepted
        'd': _mask(high=1),  # a 0/1 mask
        'e': _mask(high=100),  # a 0/100 mask: binarised at > 128 it would be empty too
        'f': np.zeros((SIZE, SIZE), np.uint8),  # an empty mask is legitimate (no salient object)
    }
    _write(tmp_path, 'dut-omron', stems=tuple('abcdef'), masks=masks)
    report = tool.check_saliency_dataset(str(tmp_path), 'dut-omron')
    assert report.size_mismatches == [('a.jpg', (SIZE, SIZE), (SIZE + 2, SIZE))]
    assert [name for name, _ in report.soft_masks] == ['b.png']
    assert report.soft_masks[0][1] == pytest.approx(0.06)
    assert report.empty_after_binarising == [('d.png', 1), ('e.png', 100)]
    out = report.summary()
    assert 'size mismatch: image a.jpg is 20x20 but its mask is 22x20' in out
    assert 'soft mask: b.png has 6.0%' in out and 'c.png' not in out and 'f.png' not in out
    assert 'not a 0/255 mask: d.png holds values up to 1' in out and 'e.png holds values up to 100' in out
    assert tool.check_saliency_dataset(str(tmp_path), 'dut-omron', soft_tolerance=0.1).soft_masks == []


def _truncate(path, keep=0.6):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize('kind', ['image', 'mask'])
def test_truncated_files_are_decoded_fully_and_named(tmp_path, kind):
    # the header survives, so opening the file (what the checker did before) does not notice anything
    _write(tmp_path, 'sod', stems=('a', 'b'))
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / 'Image' / 'b.jpg', quality=95)
    mask = np.where(np.random.default_rng(1).random((SIZE, SIZE)) < 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(mask).save(tmp_path / 'Mask' / 'b.png')
    path = tmp_path / ('Image/b.jpg' if kind == 'image' else 'Mask/b.png')
    _truncate(path)
    with Image.open(path) as im:  # the header is intact
        assert im.size == (SIZE, SIZE)
    report = tool.check_saliency_dataset(str(tmp_path), 'sod')
    assert [name for name, _ in report.unreadable] == ['b.jpg' if kind == 'image' else 'b.png']
    assert 'truncated' in report.unreadable[0][1] or 'broken' in report.unreadable[0][1]
    assert report.broken() == {'b'} and not report.ok
    assert f"unreadable: {report.unreadable[0][0]}" in report.summary()


def test_unreadable_and_missing_folders(tmp_path):
    report = tool.check_saliency_dataset(str(tmp_path), 'ecssd')
    assert not report.ok and 'missing folder' in report.problems()[0]
    _write(tmp_path, 'ecssd', stems=('a',))
    (tmp_path / 'ground_truth_mask' / 'a.png').write_bytes(b'not a png')
    report = tool.check_saliency_dataset(str(tmp_path), 'ecssd')
    assert [name for name, _ in report.unreadable] == ['a.png']
    with pytest.raises(ValueError, match='layout'):
        tool.check_saliency_dataset(str(tmp_path), 'msra')


def test_repack_round_trip(tmp_path):
    source = tmp_path / 'HKU-IS'
    _write(source, 'hku-is', stems=('a', 'b', 'c'), masks={'c': _mask(size=(SIZE + 1, SIZE))})
    out = tmp_path / 'repack'
    report = tool.check_saliency_dataset(str(source), 'hku-is')
    assert not report.ok and report.broken() == {'c'}
    assert tool.repack_saliency_dataset(report, str(out)) == str(out / 'HKU-IS')
    assert sorted(os.listdir(out / 'HKU-IS' / 'Image')) == ['a.png', 'b.png']  # image bytes kept as is
    assert sorted(os.listdir(out / 'HKU-IS' / 'Mask')) == ['a.png', 'b.png']  # no temporary file left
    assert (out / 'HKU-IS' / 'Image' / 'a.png').read_bytes() == (source / 'imgs' / 'a.png').read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'HKU-IS' / 'Mask' / 'a.png')), _mask())
    again = tool.check_saliency_dataset(str(out / 'HKU-IS'), 'repack')
    assert again.ok
    # an existing non-empty output is refused without force; the dataset itself is never a target
    before = (out / 'HKU-IS' / 'Mask' / 'a.png').read_bytes()
    with pytest.raises(ValueError, match='exists and is not empty'):
        tool.repack_saliency_dataset(report, str(out))
    assert tool.repack_saliency_dataset(report, str(out), force=True) == str(out / 'HKU-IS')
    assert (out / 'HKU-IS' / 'Mask' / 'a.png').read_bytes() == before
    with pytest.raises(ValueError, match='onto itself'):
        tool.repack_saliency_dataset(again, str(out), name='HKU-IS', force=True)
    tool.repack_saliency_dataset(again, str(tmp_path / 'again'), name='X')
    assert sorted(os.listdir(tmp_path / 'again' / 'X' / 'Mask')) == ['a.png', 'b.png']

    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    import calibseg.datasets.saliency  # noqa: F401
    import calibseg.datasets.transforms.load_binary_annotations  # noqa: F401

    init_default_scope('mmseg')
    dataset = DATASETS.build(dict(
        type='HKUISDataset', data_root=str(out / 'HKU-IS'), data_prefix=dict(img_path='Image', seg_map_path='Mask'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'), dict(type='PackSegInputs')]))
    assert len(dataset) == 2
    assert set(dataset[0]['data_samples'].gt_sem_seg.data.unique().tolist()) == {0, 1}
