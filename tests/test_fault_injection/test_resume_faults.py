"""Fault injection: a work directory whose ``last_checkpoint`` points outside it (a copied or shared work dir, or a
planted file) must not be unpickled by ``--resume`` or by the experiment tools that read a run's newest checkpoint."""
from __future__ import annotations

import os
import os.path as osp

import pytest
import torch
from calibseg_testing import DEMO_CONFIG, tiny_run_options
from mmengine.config import Config

from calibseg import apis
from calibseg.apis.experiment import aslp_alpha_statistics, latest_checkpoint
from calibseg.compat import UntrustedCheckpointError, own_latest_checkpoint, resolve_resume, trusted


def _touch(path: str) -> dict:
    with open(path, 'w') as f:
        f.write('payload ran')
    return {}


class Payload:
    """Unpickling this runs ``_touch(marker)``: proof that a file was loaded with full unpickling."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return _touch, (self.marker,)


@pytest.fixture
def planted(tmp_path):
    """A work dir whose last_checkpoint names a malicious checkpoint in another folder."""
    marker = tmp_path / 'payload_ran'
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    evil = elsewhere / 'iter_4.pth'
    torch.save({'state_dict': Payload(str(marker)), 'meta': {}}, str(evil))
    work_dir = tmp_path / 'run'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(evil))
    return dict(work_dir=str(work_dir), evil=str(evil), marker=marker)


def test_the_planted_file_really_runs_code_when_unpickled(planted):
    from calibseg.compat import load_trusted_checkpoint

    load_trusted_checkpoint(trusted(planted['evil']))  # what resume used to do with it
    assert planted['marker'].is_file()


def test_resolve_resume_refuses_a_checkpoint_outside_the_work_dir(planted):
    cfg = Config(dict(work_dir=planted['work_dir']))
    with pytest.raises(UntrustedCheckpointError) as err:
        resolve_resume(cfg, True)
    assert planted['evil'] in str(err.value) and 'outside' in str(err.value)
    assert 'load_from' not in cfg and not planted['marker'].exists()


def test_training_with_resume_refuses_before_loading_anything(planted, tiny_voc):
    with pytest.raises(UntrustedCheckpointError, match=planted['evil']):
        apis.train(DEMO_CONFIG, work_dir=planted['work_dir'], resume=True,
                   cfg_options=tiny_run_options(tiny_voc, max_iters=2), quiet=True)
    assert not planted['marker'].exists()


def test_experiment_tools_refuse_it_too(planted):
    # tools/demo.py, compare_methods.py (test_latest) and compare_saliency.py (ASLP statistics)
    with pytest.raises(UntrustedCheckpointError, match=planted['evil']):
        latest_checkpoint(planted['work_dir'])
    with pytest.raises(UntrustedCheckpointError, match=planted['evil']):
        aslp_alpha_statistics(planted['work_dir'])
    assert not planted['marker'].exists()


def test_a_link_leading_out_of_the_work_dir_is_refused(planted):
    link = osp.join(planted['work_dir'], 'iter_4.pth')
    os.symlink(planted['evil'], link)
    with open(osp.join(planted['work_dir'], 'last_checkpoint'), 'w') as f:
        f.write(link)
    with pytest.raises(UntrustedCheckpointError, match='iter_4.pth'):
        own_latest_checkpoint(planted['work_dir'])


def test_a_file_not_named_like_mmengine_checkpoints_is_refused(tmp_path):
    planted = tmp_path / 'model.pkl'
    torch.save({}, str(planted))
    (tmp_path / 'last_checkpoint').write_text(str(planted))
    with pytest.raises(UntrustedCheckpointError, match='model.pkl'):
        own_latest_checkpoint(str(tmp_path))
    (tmp_path / 'last_checkpoint').write_text('')
    with pytest.raises(UntrustedCheckpointError, match='empty'):
        own_latest_checkpoint(str(tmp_path))


def test_the_runs_own_checkpoint_is_trusted(tmp_path):
    ckpt = tmp_path / 'iter_8.pth'
    torch.save({'meta': {}}, str(ckpt))
    (tmp_path / 'last_checkpoint').write_text(str(ckpt))
    assert own_latest_checkpoint(str(tmp_path)) == str(ckpt)
    cfg = Config(dict(work_dir=str(tmp_path)))
    resolve_resume(cfg, True)
    assert cfg.load_from == trusted(str(ckpt)) and cfg.resume
    os.remove(ckpt)
    with pytest.raises(FileNotFoundError, match='iter_8.pth'):
        own_latest_checkpoint(str(tmp_path))
    os.remove(tmp_path / 'last_checkpoint')
    assert own_latest_checkpoint(str(tmp_path)) is None
