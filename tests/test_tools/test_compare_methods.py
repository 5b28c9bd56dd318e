"""tools/compare_methods.py: the runs trained through calibseg.study.demo.train_compare_runs, then tested, CE
first; --reuse, the timing note and the tables it writes (training and testing replaced by recorders)."""
from __future__ import annotations

import importlib.util
import os
import os.path as osp

import pytest
from calibseg_testing import ROOT

from calibseg.apis.experiment import run_name
from calibseg.study.demo import demo_recipes


def _tool():
    spec = importlib.util.spec_from_file_location('compare_methods', osp.join(ROOT, 'tools', 'compare_methods.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def recorded(monkeypatch):
    import calibseg.apis as apis

    tool = _tool()
    calls = dict(train=[], test=[], written=[])

    def train(config, *, work_dir, cfg_options, quiet):
        calls['train'].append(run_name(config))
        assert quiet  # the cfg_options are checked in tests/test_study/test_study_demo.py
        os.makedirs(work_dir, exist_ok=True)
        open(osp.join(work_dir, 'iter_600.pth'), 'wb').close()

    def test_latest(config, work_dir, options, quiet):
        calls['test'].append(run_name(config))
        assert osp.isfile(osp.join(work_dir, 'iter_600.pth'))  # every run is trained before any is tested
        return {'mIoU': 30.0 + len(calls['test']), 'ECE': 5.0}

    monkeypatch.setattr(apis, 'train', train)
    monkeypatch.setattr(tool, 'test_latest', test_latest)
    monkeypatch.setattr(tool, 'ensure_demo_data', lambda root, datasets: None)
    monkeypatch.setattr(tool, 'write_marked_section', lambda path, text: calls['written'].append((path, text)))
    return tool, calls


def test_trains_every_run_then_tests_them_ce_first(recorded, tmp_path, capsys):
    tool, calls = recorded
    ls, ce = [c for c in demo_recipes(ROOT) if '_ls_' in c or '_ce_' in c][::-1]
    assert '_ls_' in ls and '_ce_' in ce
    args = ['--data-root', 'data/x', '--work-dir', str(tmp_path), '--configs', ls, ce]
    tool.main(args)
    assert calls['train'] == calls['test'] == [run_name(ce), run_name(ls)]
    out = capsys.readouterr().out
    assert '[compare] ' + run_name(ce) + ': trained in' in out and '| metric | ce | ls |' in out
    assert [p for p, _ in calls['written']] == [osp.join(osp.dirname(c), 'README.md') for c in (ce, ls)] + [
        osp.join(ROOT, 'docs', 'demo_comparison.md')]
    assert '| metric | **ce** | ls |' in calls['written'][0][1] and '| mIoU (%) | 31.00 | 32.00 |' in out

    # --reuse tests the finished runs again without training them; without it everything is trained again
    for key in calls:
        calls[key].clear()
    (tmp_path / run_name(ls) / 'iter_600.pth').unlink()
    tool.main(args + ['--reuse', '--no-write'])
    assert calls['train'] == [run_name(ls)] and calls['test'] == [run_name(ce), run_name(ls)]
    assert not calls['written']
    out = capsys.readouterr().out
    assert f'[compare] {run_name(ce)}: finished earlier' in out and '1 runs trained and 2 tested in' in out
    assert '1 runs reused' in out
    calls['train'].clear()
    tool.main(args + ['--no-write'])
    assert calls['train'] == [run_name(ce), run_name(ls)]
