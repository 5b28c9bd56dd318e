"""tools/dataset_converters/check_saliency_dataset.py: problems reported by file name, exit status, repack."""
import importlib.util
import os
import os.path as osp
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'dataset_converters', 'check_saliency_dataset.py')
SIZE = 20


def _load_module():
    spec = importlib.util.spec_from_file_location('check_saliency_dataset', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


tool = _load_module()

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
def test_clean_layouts_pass(tmp_path, layout, capsys):
    _write(tmp_path, layout)
    report = tool.check_saliency_dataset(str(tmp_path), layout)
    assert report.ok and len(report.pairs) == 3, report.summary()
    assert tool.main([str(tmp_path), '--layout', layout]) == 0
    assert 'OK' in capsys.readouterr().out


def test_missing_pairs_are_reported_by_name(tmp_path, capsys):
    _write(tmp_path, 'ecssd')
    os.remove(tmp_path / 'ground_truth_mask' / 'b.png')
    Image.fromarray(_mask()).save(tmp_path / 'ground_truth_mask' / 'lonely.png')
    report = tool.check_saliency_dataset(str(tmp_path), 'ecssd')
    assert (report.images_without_mask, report.masks_without_image) == (['b.jpg'], ['lonely.png'])
    assert tool.main([str(tmp_path), '--layout', 'ecssd']) == 1
    out = capsys.readouterr().out
    assert 'without a mask' in out and 'b.jpg' in out and 'lonely.png' in out


def test_size_mismatch_soft_and_zero_one_masks(tmp_path, capsys):
    masks = {
        'a': _mask(size=(SIZE + 2, SIZE)),  # size mismatch
        'b': _mask(soft_pixels=int(0.06 * SIZE * SIZE)),  # 6% soft: reported
        'c': _mask(soft_pixels=int(0.04 * SIZE * SIZE)),  # 4% soft: accepted
        'd': _mask(high=1),  # a 0/1 mask
    }
    _write(tmp_path, 'dut-omron', stems=('a', 'b', 'c', 'd'), masks=masks)
    report = tool.check_saliency_dataset(str(tmp_path), 'dut-omron')
    assert report.size_mismatches == [('a.jpg', (SIZE, SIZE), (SIZE + 2, SIZE))]
    assert [name for name, _ in report.soft_masks] == ['b.png']
    assert report.soft_masks[0][1] == pytest.approx(0.06)
    assert report.zero_one_masks == ['d.png']
    assert tool.main([str(tmp_path), '--layout', 'dut-omron']) == 1
    out = capsys.readouterr().out
    assert 'size mismatch: image a.jpg is 20x20 but its mask is 22x20' in out
    assert 'soft mask: b.png has 6.0%' in out and 'c.png' not in out and '0/1 mask: d.png' in out
    assert tool.check_saliency_dataset(str(tmp_path), 'dut-omron', soft_tolerance=0.1).soft_masks == []


def test_unreadable_and_missing_folders(tmp_path):
    report = tool.check_saliency_dataset(str(tmp_path), 'ecssd')
    assert not report.ok and 'missing folder' in report.problems()[0]
    _write(tmp_path, 'ecssd', stems=('a',))
    (tmp_path / 'ground_truth_mask' / 'a.png').write_bytes(b'not a png')
    report = tool.check_saliency_dataset(str(tmp_path), 'ecssd')
    assert [name for name, _ in report.unreadable] == ['a.png']
    with pytest.raises(ValueError, match='layout'):
        tool.check_saliency_dataset(str(tmp_path), 'msra')


def test_repack_round_trip(tmp_path, capsys):
    source = tmp_path / 'HKU-IS'
    _write(source, 'hku-is', stems=('a', 'b', 'c'), masks={'c': _mask(size=(SIZE + 1, SIZE))})
    out = tmp_path / 'repack'
    assert tool.main([str(source), '--layout', 'hku-is', '--repack', str(out)]) == 1  # c is broken
    assert 'repacked 2 pair(s)' in capsys.readouterr().out
    assert sorted(os.listdir(out / 'HKU-IS' / 'Image')) == ['a.png', 'b.png']  # image bytes kept as is
    assert sorted(os.listdir(out / 'HKU-IS' / 'Mask')) == ['a.png', 'b.png']
    assert (out / 'HKU-IS' / 'Image' / 'a.png').read_bytes() == (source / 'imgs' / 'a.png').read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(out / 'HKU-IS' / 'Mask' / 'a.png')), _mask())
    assert tool.check_saliency_dataset(str(out / 'HKU-IS'), 'repack').ok
    assert tool.main([str(out / 'HKU-IS'), '--layout', 'repack', '--repack', str(tmp_path / 'again'),
                      '--name', 'X']) == 0
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
