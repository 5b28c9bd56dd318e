"""The post-hoc calibration configs: they parse, split the val set in two, and build with a calibrator file."""
from __future__ import annotations

import copy
import glob
import os.path as osp

import pytest
import torch
from calibseg_testing import ROOT
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import calibseg  # noqa: F401
from calibseg.calibrators import build_calibrator, save_calibrator
from calibseg.models.segmentors import resolve_calibrator_method

CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', 'posthoc', '*.py')))
NAMES = [osp.basename(p) for p in CONFIGS]


def test_the_expected_configs_and_readme_exist():
    for method in ('ts', 'cts', 'vs', 'lts'):
        assert f'fcn_r18-d16_ce-{method}_1xb8-600it_demo-voc12aug-96x96.py' in NAMES
    for method in ('ts', 'lts'):
        assert f'deeplabv3plus_r50-d8_ce-{method}_4xb4-20k_voc12aug-512x512.py' in NAMES
    readme = open(osp.join(ROOT, 'configs', 'posthoc', 'README.md')).read()
    assert '<!-- calibseg:results:start -->' in readme and '<!-- calibseg:results:end -->' in readme
    for name in NAMES:
        assert name in readme, name


def fitted_file(tmp_path, method, num_classes=21):
    """A calibrator file of ``method`` (fitted on a few random pixels) for a ``num_classes`` head."""
    cls = resolve_calibrator_method(method, num_classes)
    calibrator = build_calibrator(cls, {'num_classes': num_classes})
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, num_classes, 6, 6, generator=g)
    labels = torch.randint(0, num_classes, (2, 6, 6), generator=g)
    if cls == 'LocalTemperatureScaling':
        calibrator.fit(logits, labels, epochs=1)
    else:
        calibrator.fit(logits, labels)
    path = tmp_path / f'{method}.pth'
    save_calibrator(path, calibrator)
    return str(path)


@pytest.mark.parametrize('path', CONFIGS, ids=NAMES)
def test_posthoc_config_parses_splits_and_builds(path, tmp_path):
    cfg = Config.fromfile(path)
    stem = osp.splitext(osp.basename(path))[0]
    assert cfg.custom_imports == dict(imports=['calibseg'], allow_failed_imports=False)
    assert cfg.model.type == 'CalibratedEncoderDecoder'
    method = cfg.model.calibrator.method
    assert f'-{method}_' in stem  # the config name says which calibrator it applies
    assert cfg.model.calibrator.file == f'work_dirs/posthoc/{stem}/calibrator.pth'
    calib, test = cfg.calib_dataloader.dataset, cfg.test_dataloader.dataset
    if '_demo-' in stem:  # extra generated calibration images; tested on the demo val set like the baseline
        assert calib.type == 'PascalVOCDataset' and calib.data_root == 'data/demo_calib/VOCdevkit/VOC2012'
        assert calib.pipeline == test.pipeline
        assert test == cfg.val_dataloader.dataset and test.data_root == 'data/demo/VOCdevkit/VOC2012'
    else:  # fitted on one half of the val set, tested on the other
        assert calib.type == test.type == 'HeldOutSplit'
        assert (calib.part, test.part) == ('held_out', 'train')
        assert calib.dataset == test.dataset == cfg.val_dataloader.dataset
        assert (calib.held_out, calib.seed) == (test.held_out, test.seed)
    assert cfg.calib_dataloader.sampler == dict(type='DefaultSampler', shuffle=False)
    evaluators = {e['type'] for e in cfg.test_evaluator}
    assert evaluators == {'IoUMetric', 'PixelCalibrationMetric'}

    init_default_scope('mmseg')  # (builds from copies: mmseg's EncoderDecoder edits its backbone cfg in place)
    cfg.model.calibrator.file = fitted_file(tmp_path, method)
    model = MODELS.build(copy.deepcopy(cfg.model))
    assert type(model.calibrator).__name__ == resolve_calibrator_method(method, 21)
    other = 'vs' if method != 'vs' else 'ts'
    cfg.model.calibrator.file = fitted_file(tmp_path, other)
    with pytest.raises(ValueError, match='but expected_method'):
        MODELS.build(copy.deepcopy(cfg.model))
    cfg.model.calibrator.file = str(tmp_path / 'absent.pth')
    with pytest.raises(FileNotFoundError, match='calibrator file not found'):
        MODELS.build(copy.deepcopy(cfg.model))


def test_voc_split_is_a_partition_of_the_val_set(tiny_voc):
    cfg = Config.fromfile(CONFIGS[NAMES.index('deeplabv3plus_r50-d8_ce-ts_4xb4-20k_voc12aug-512x512.py')])
    init_default_scope('mmseg')

    def paths(ds_cfg):
        dataset = DATASETS.build(ds_cfg)
        return {dataset[i]['data_samples'].img_path for i in range(len(dataset))}

    for key in ('calib_dataloader', 'test_dataloader', 'val_dataloader'):
        dataset = cfg[key].dataset
        (dataset.dataset if key != 'val_dataloader' else dataset).data_root = tiny_voc
    calib, test = paths(cfg.calib_dataloader.dataset), paths(cfg.test_dataloader.dataset)
    assert len(calib) == 2 and len(test) == 3  # round(0.5 * 5) held out
    assert calib.isdisjoint(test) and calib | test == paths(cfg.val_dataloader.dataset)
