"""calibseg.study.config: the fit / test splits, also of the config dump a test run leaves in a work dir."""
from __future__ import annotations

import pytest

from calibseg.study.config import load_config, split_loaders
from calibseg.study.models import ModelSpec
from calibseg.study.protocol import StudyProtocol

LOADER = "dict(batch_size=1, dataset=dict(type='PascalVOCDataset', data_root='data/voc', ann_file='val.txt'))"


def _spec(tmp_path, val: str) -> ModelSpec:
    config = tmp_path / 'model.py'
    config.write_text(f'val_dataloader = {val}\ntest_dataloader = {LOADER}\n')
    (tmp_path / 'model.pth').write_bytes(b'weights')
    return ModelSpec(config=str(config), checkpoint=str(tmp_path / 'model.pth'), group='wd')


def test_split_of_the_validation_loader(tmp_path):
    cfg = load_config(_spec(tmp_path, LOADER.replace('val.txt', 'other.txt')))
    loaders = split_loaders(cfg, StudyProtocol())
    fit, description = loaders['fit']
    assert description.startswith('val_dataloader:HeldOutSplit(part=held_out')
    assert fit['dataset']['type'] == 'HeldOutSplit' and fit['dataset']['dataset']['ann_file'] == 'other.txt'
    assert loaders['test'][0]['dataset']['part'] == 'train'


def test_test_only_dump_splits_its_test_loader(tmp_path):
    """A test run sets val_dataloader = None in the work dir's dump: the study splits the test loader, says so,
    and the data-root option given for the validation loader reaches it."""
    cfg = load_config(_spec(tmp_path, 'None'), {'val_dataloader.dataset.data_root': 'elsewhere'})
    loaders = split_loaders(cfg, StudyProtocol())
    for part, held in (('fit', 'held_out'), ('test', 'train')):
        loader, description = loaders[part]
        assert description.startswith(f'test_dataloader:HeldOutSplit(part={held}')
        assert loader['dataset']['dataset'] == dict(type='PascalVOCDataset', data_root='elsewhere',
                                                    ann_file='val.txt')


def test_config_without_any_loader_is_refused(tmp_path):
    config = tmp_path / 'model.py'
    config.write_text('val_dataloader = None\n')
    (tmp_path / 'model.pth').write_bytes(b'weights')
    cfg = load_config(ModelSpec(config=str(config), checkpoint=str(tmp_path / 'model.pth'), group='wd'))
    with pytest.raises(KeyError, match="no 'val_dataloader' to split"):
        split_loaders(cfg, StudyProtocol())
