"""calibseg.study.identity: a model's id is its weights and the config parts that the measurement reads."""
from __future__ import annotations

import hashlib

import pytest

from calibseg.study import StudyProtocol, append_row, legacy_model_id, model_id, plan
from calibseg.study.models import ModelSpec

TRAINING_DUMP = """\
model = dict(type='EncoderDecoder', decode_head=dict(type='FCNHead', num_classes=3, channels=8))
loader = dict(batch_size=1, dataset=dict(type='PascalVOCDataset', data_root='data/voc', ann_file='val.txt'))
train_dataloader = dict(batch_size=4, dataset=dict(type='PascalVOCDataset', data_root='data/voc'))
val_dataloader = loader
test_dataloader = loader
train_cfg = dict(type='IterBasedTrainLoop', max_iters=600)
work_dir = 'work_dirs/run'
"""
# what a test run dumps over it: the loaders it does not run set to None, the checkpoint it loads, and the default
# scope that mmengine's registry wrote into the dicts it built
TEST_DUMP = """\
model = dict(_scope_='mmseg', type='EncoderDecoder',
             decode_head=dict(_scope_='mmseg', type='FCNHead', num_classes=3, channels=8))
test_dataloader = dict(batch_size=1, dataset=dict(type='PascalVOCDataset', data_root='data/voc', ann_file='val.txt'))
train_dataloader = None
val_dataloader = None
train_cfg = None
load_from = 'work_dirs/run/iter_600.pth'
work_dir = 'work_dirs/elsewhere'
"""


def _spec(tmp_path, name: str, text: str, weights: bytes = b'weights') -> ModelSpec:
    (tmp_path / name).write_text(text)
    (tmp_path / 'iter_600.pth').write_bytes(weights)
    return ModelSpec(str(tmp_path / name), str(tmp_path / 'iter_600.pth'), 'run')


def test_training_and_test_dumps_of_a_run_have_one_id(tmp_path):
    trained = _spec(tmp_path, 'train.py', TRAINING_DUMP)
    tested = _spec(tmp_path, 'test.py', TEST_DUMP)
    assert model_id(trained) == model_id(tested)
    assert model_id(trained).startswith(hashlib.sha256(b'weights').hexdigest()[:16] + '-')
    assert legacy_model_id(trained) != legacy_model_id(tested)  # the text hash of earlier tables did not
    # the default protocol splits the validation loader; one that fits and tests on named loaders gives its own id
    named = StudyProtocol(fit_split='test_dataloader', test_split='test_dataloader')
    assert model_id(trained, named) == model_id(tested, named) != model_id(trained)


@pytest.mark.parametrize('edit', [
    ("num_classes=3", "num_classes=4"),  # another network
    ("data_root='data/voc', ann_file", "data_root='data/other', ann_file"),  # other test data
])
def test_what_the_measurement_reads_changes_the_id(tmp_path, edit):
    base = model_id(_spec(tmp_path, 'a.py', TRAINING_DUMP))
    assert model_id(_spec(tmp_path, 'b.py', TRAINING_DUMP.replace(*edit))) != base
    reweighted = model_id(_spec(tmp_path, 'c.py', TRAINING_DUMP, weights=b'other weights'))
    assert reweighted != base and reweighted.split('-')[1] == base.split('-')[1]  # other weights, same config
    # what the measurement does not read leaves it alone
    same = TRAINING_DUMP.replace("max_iters=600", "max_iters=900").replace("'work_dirs/run'", "'w2'")
    assert model_id(_spec(tmp_path, 'd.py', same + "custom_hooks = [dict(type='X')]\n")) == base


def test_unreadable_configs_are_named(tmp_path):
    with pytest.raises(ValueError, match='half-written'):
        model_id(_spec(tmp_path, 'half.py', TRAINING_DUMP[:40]))
    with pytest.raises(ValueError, match='defines no model'):
        model_id(_spec(tmp_path, 'empty.py', ''))
    with pytest.raises(ValueError, match="has no 'val_dataloader' to split"):
        model_id(_spec(tmp_path, 'a.py', TEST_DUMP.replace('test_dataloader', 'other_loader')))
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        model_id(ModelSpec(str(tmp_path / 'a.py'), str(tmp_path / 'none.pth'), 'g'))
    with pytest.raises(FileNotFoundError, match='config not found'):
        model_id(ModelSpec(str(tmp_path / 'none.py'), str(tmp_path / 'iter_600.pth'), 'g'))


def test_plan_skips_rows_under_either_id_and_reports_broken_configs(tmp_path):
    protocol = StudyProtocol()
    trained = _spec(tmp_path, 'train.py', TRAINING_DUMP)
    other = ModelSpec(trained.config, str(tmp_path / 'iter_300.pth'), 'run')
    (tmp_path / 'iter_300.pth').write_bytes(b'earlier weights')
    broken = _spec(tmp_path, 'broken.py', '')
    out = str(tmp_path / 'study.csv')
    append_row(out, {'model_id': legacy_model_id(trained), 'protocol_id': protocol.id})  # an earlier table's row
    work = plan([trained, other, broken], out, protocol)
    assert [(status, mid) for _, mid, status in work[:2]] == [('skip', legacy_model_id(trained)),
                                                              ('todo', model_id(other))]
    assert work[2][1] is None and work[2][2].startswith('ValueError: config') and 'defines no model' in work[2][2]
    append_row(out, {'model_id': model_id(other), 'protocol_id': protocol.id})
    assert [status for _, _, status in plan([trained, other], out, protocol)] == ['skip', 'skip']
