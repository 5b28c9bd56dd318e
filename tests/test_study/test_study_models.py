"""calibseg.study.models: model discovery in work dirs and lists, ordering, de-duplication."""
from __future__ import annotations

import os.path as osp

import pytest

from calibseg.study.models import (
    ModelSpec,
    checkpoint_iteration,
    discover_models,
    parse_model_pair,
    read_model_list,
    work_dir_checkpoints,
    work_dir_config,
)


def test_work_dir_checkpoints_sort_by_training_length(tmp_path):
    for name in ('iter_10.pth', 'iter_2.pth', 'best_mIoU.pth', 'iter_300.pth'):
        (tmp_path / name).write_bytes(b'')
    all_ckpts = [osp.basename(p) for p in work_dir_checkpoints(str(tmp_path), all_checkpoints=True)]
    assert all_ckpts == ['iter_2.pth', 'iter_10.pth', 'iter_300.pth']
    assert [osp.basename(p) for p in work_dir_checkpoints(str(tmp_path), all_checkpoints=False)] == ['iter_300.pth']
    assert checkpoint_iteration('x/epoch_7.pth') == 7 and checkpoint_iteration('x/best_mIoU.pth') is None


def test_model_pairs_and_lists(tmp_path):
    assert parse_model_pair('a/b.py:c/d:e.pth') == ('a/b.py', 'c/d:e.pth')
    with pytest.raises(ValueError, match='CONFIG.py:CHECKPOINT'):
        parse_model_pair('model.pth')
    listing = tmp_path / 'models.txt'
    listing.write_text('config,checkpoint\n# a comment\na.py b.pth\nc.py,d.pth  # trailing\n\ne.py:f.pth\n')
    assert read_model_list(str(listing)) == [('a.py', 'b.pth'), ('c.py', 'd.pth'), ('e.py', 'f.pth')]
    listing.write_text('a.py b.pth c.pth\n')
    with pytest.raises(ValueError, match=':1: expected CONFIG CHECKPOINT'):
        read_model_list(str(listing))


def test_discovery_in_work_dirs_keeps_order_and_drops_duplicates(tmp_path):
    run = tmp_path / 'runs' / 'fcn_ce'
    run.mkdir(parents=True)
    (run / 'fcn_ce.py').write_text('x = 1\n')
    for it in (4, 2):
        (run / f'iter_{it}.pth').write_bytes(b'w%d' % it)
    empty = tmp_path / 'runs' / 'empty'
    empty.mkdir()
    with pytest.warns(UserWarning, match='no iter_'):
        specs = discover_models(models=[f'{run}/fcn_ce.py:{run}/iter_4.pth'],
                                work_dirs=[str(tmp_path / 'runs' / '*')], all_checkpoints=True)
    assert [s.name for s in specs] == ['fcn_ce@iter_4', 'fcn_ce@iter_2']  # iter_4 named twice: kept once
    assert specs[1] == ModelSpec(str(run / 'fcn_ce.py'), str(run / 'iter_2.pth'), 'fcn_ce')
    with pytest.warns(UserWarning, match='no work directory matches'):
        assert discover_models(work_dirs=[str(tmp_path / 'nothing*')]) == []
    (run / 'other.py').write_text('y = 2\n')
    assert work_dir_config(str(run)) == str(run / 'fcn_ce.py')  # the one named like the directory
    (run / 'fcn_ce.py').unlink()
    assert work_dir_config(str(run)) == str(run / 'other.py')  # the only one
    (run / 'third.py').write_text('z = 3\n')
    with pytest.raises(ValueError, match='several configs'):
        work_dir_config(str(run))
    (run / 'other.py').unlink()
    (run / 'third.py').unlink()
    specs = discover_models(work_dirs=[str(run)])  # a run without config is kept, to be reported as failed
    assert specs[0].config.startswith('<no config')

