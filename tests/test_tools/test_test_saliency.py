"""tools/test_saliency.py and calibseg.apis.saliency_sets: every test set of a config in one command, missing and
broken sets reported."""
from __future__ import annotations

import json
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
from calibseg_testing import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS

from calibseg.apis.saliency_sets import evaluate_saliency_sets, write_saliency_results
from calibseg.compat import trusted

DEMO_BCE = osp.join(ROOT, 'configs', 'saliency', 'fcn_r18-d16_bce_1xb8-30ep_demo-duts-96x96.py')
# the six conventional layouts under data/ (relocated by --data-root), the demo test pipeline
CONFIG = """
_base_ = [{base!r}]
model = dict(data_preprocessor=dict(size=(32, 32)))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'), dict(type='PackSegInputs')]
custom_hooks = []  # no reliability diagrams: faster
saliency_test_sets = {{
    'DUTS-TE': dict(type='DUTSDataset', data_root='data/DUTS', pipeline=test_pipeline,
                    data_prefix=dict(img_path='DUTS-TE/DUTS-TE-Image', seg_map_path='DUTS-TE/DUTS-TE-Mask')),
    'ECSSD': dict(type='ECSSDDataset', data_root='data/ECSSD', pipeline=test_pipeline),
    'HKU-IS': dict(type='HKUISDataset', data_root='data/HKU-IS', pipeline=test_pipeline),
    'PASCAL-S': dict(type='PASCALSDataset', data_root='data/PASCAL-S', pipeline=test_pipeline),
    'DUT-OMRON': dict(type='DUTOMRONDataset', data_root='data/DUT-OMRON', pipeline=test_pipeline),
    'SOD': dict(type='SODDataset', data_root='data/SOD', pipeline=test_pipeline),
}}
"""


def _copy(src_dir, dst_dir, suffix):
    os.makedirs(dst_dir, exist_ok=True)
    for name in sorted(os.listdir(src_dir)):
        if name.endswith(suffix):
            shutil.copy(osp.join(src_dir, name), dst_dir)


@pytest.fixture(scope='module')
def setup(tmp_path_factory, demo_generator):
    """Generated DUTS-TE copied into the ECSSD and PASCAL-S layouts (same images), a broken HKU-IS, a checkpoint."""
    root = tmp_path_factory.mktemp('saliency_sets')
    demo_generator.generate_duts(str(root), num_train=2, num_test=3, size=32, seed=0)
    images, masks = root / 'DUTS' / 'DUTS-TE' / 'DUTS-TE-Image', root / 'DUTS' / 'DUTS-TE' / 'DUTS-TE-Mask'
    _copy(images, root / 'ECSSD' / 'images', '.jpg')
    _copy(masks, root / 'ECSSD' / 'ground_truth_mask', '.png')
    _copy(images, root / 'PASCAL-S', '.jpg')  # one folder for images and masks
    _copy(masks, root / 'PASCAL-S', '.png')
    _copy(masks, root / 'HKU-IS' / 'imgs', '.png')  # images ...
    os.makedirs(root / 'HKU-IS' / 'gt')  # ... whose masks are missing: unpaired
    shutil.copy(next(masks.iterdir()), root / 'HKU-IS' / 'gt' / 'other.png')
    config = root / 'bce_sets.py'
    config.write_text(CONFIG.format(base=DEMO_BCE))
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(str(config)).model)
    checkpoint = root / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), checkpoint)
    return dict(root=str(root), config=str(config), checkpoint=str(checkpoint))


def test_one_command_evaluates_every_available_set(setup, tmp_path):
    out = tmp_path / 'summary.md'
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test_saliency.py'), setup['config'],
                           setup['checkpoint'], '--data-root', setup['root'], '--work-dir', str(tmp_path / 'work'),
                           '--datasets', 'DUTS-TE', 'ECSSD', 'PASCAL-S', 'SOD', '--out', str(out)],
                          capture_output=True, text=True, timeout=600)
    printed = proc.stdout
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f'SOD: skipped, data missing: {osp.join(setup["root"], "SOD")}' in printed
    for name in ('DUTS-TE', 'ECSSD', 'PASCAL-S'):
        assert f'==================== {name} (3 images) ====================' in printed
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith('| ') and not line.startswith('| test set')]
    assert [r.split('|')[1].strip() for r in rows] == ['DUTS-TE', 'ECSSD', 'PASCAL-S']
    assert 'Skipped (data missing): SOD' in table
    results = json.loads((tmp_path / 'summary.json').read_text())['results']
    # the same three images in three layouts: the same numbers
    keys = ('MAE', 'maxF', 'meanF', 'Sm', 'meanEm', 'maxEm', 'ECE', 'OE_10', 'NLL')
    for name in ('ECSSD', 'PASCAL-S'):
        assert {k: results[name][k] for k in keys} == {k: results['DUTS-TE'][k] for k in keys}

    # and the numbers of mmengine's own test loop on DUTS-TE (an independent path: no prefixes, one set)
    cfg = Config.fromfile(setup['config'])
    cfg.test_dataloader.dataset.data_root = osp.join(setup['root'], 'DUTS')
    cfg.work_dir = str(tmp_path / 'reference')
    cfg.experiment_name = 'reference_test'
    cfg.load_from = trusted(setup['checkpoint'])
    reference = Runner.from_cfg(cfg).test()
    for key in keys:
        assert results['DUTS-TE'][key] == pytest.approx(reference[key], rel=1e-9, abs=1e-12), key
    assert results['DUTS-TE']['images'] == 3


def test_broken_and_missing_sets_are_reported_and_the_others_proceed(setup, tmp_path):
    messages = []
    out = evaluate_saliency_sets(setup['config'], setup['checkpoint'], data_root=setup['root'],
                                 work_dir=str(tmp_path), echo=messages.append)
    write_saliency_results(out, str(tmp_path / 'saliency_results.md'))
    printed = '\n'.join(messages)
    assert not out.ok  # a set failed to load
    assert 'HKU-IS: failed to load' in printed and 'without a mask' in printed
    assert 'DUT-OMRON: skipped, data missing' in printed and 'SOD: skipped, data missing' in printed
    summary = json.loads((tmp_path / 'saliency_results.json').read_text())
    assert list(summary['results']) == ['DUTS-TE', 'ECSSD', 'PASCAL-S']
    assert set(summary['skipped']) == {'DUT-OMRON', 'SOD'} and set(summary['failed']) == {'HKU-IS'}
    assert 'Failed: HKU-IS' in (tmp_path / 'saliency_results.md').read_text()


def test_nothing_to_evaluate_and_bad_names(setup, tmp_path):
    messages = []
    out = evaluate_saliency_sets(setup['config'], setup['checkpoint'], datasets=['SOD'], data_root=str(tmp_path),
                                 work_dir=str(tmp_path), echo=messages.append)
    assert not out.ok and not out.results and list(out.skipped) == ['SOD']
    assert 'SOD: skipped, data missing' in messages[0]
    with pytest.raises(ValueError, match=r"unknown test set\(s\) \['NOPE'\]"):
        evaluate_saliency_sets(setup['config'], setup['checkpoint'], datasets=['NOPE'], work_dir=str(tmp_path))
    with pytest.raises(ValueError, match='no `saliency_test_sets`'):
        evaluate_saliency_sets(osp.join(ROOT, 'configs', 'baseline',
                                        'fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py'),
                               setup['checkpoint'], work_dir=str(tmp_path))
