"""Checks that fail before a run starts: missing data, unknown config keys."""
from __future__ import annotations

import pytest
from calibseg_testing import DEMO_CONFIG, tiny_run_options
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import calibseg  # noqa: F401
from calibseg.utils.run_setup import check_data_paths, iter_dataset_cfgs, load_run_config


def test_missing_data_root_is_named(tmp_path):
    missing = str(tmp_path / 'no_such_voc')
    options = tiny_run_options(missing)
    with pytest.raises(FileNotFoundError) as err:
        load_run_config(DEMO_CONFIG, work_dir=str(tmp_path / 'w'), cfg_options=options)
    assert missing in str(err.value)
    assert 'train_dataloader.dataset.datasets.0.data_root' in str(err.value)


def test_missing_ann_file_is_named(tiny_voc, tmp_path):
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(tiny_run_options(tiny_voc))
    cfg.val_dataloader.dataset.ann_file = 'ImageSets/Segmentation/absent.txt'
    with pytest.raises(FileNotFoundError, match='absent.txt'):
        check_data_paths(cfg)


def test_demo_config_datasets_are_all_found(tiny_voc):
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(tiny_run_options(tiny_voc))
    keys = [key for key, _ in iter_dataset_cfgs(cfg)]
    assert keys == ['train_dataloader.dataset.datasets.0', 'train_dataloader.dataset.datasets.1',
                    'val_dataloader.dataset', 'test_dataloader.dataset']
    check_data_paths(cfg)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.py'):
        load_run_config(str(tmp_path / 'nope.py'))


def test_unknown_calibseg_key_fails_loudly():
    init_default_scope('mmseg')
    with pytest.raises(TypeError, match='gamma_typo'):
        MODELS.build(dict(type='SoftmaxFocalLoss', gamma_typo=2.0))
