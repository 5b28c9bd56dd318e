"""calibseg.study.demo: the extra runs train in-process (2 iterations here), keep half-way and final checkpoints,
and are not trained again once finished."""
from __future__ import annotations

import os.path as osp

from calibseg_testing import ROOT

import calibseg.study.demo as demo


def test_extra_runs_train_once_with_their_head_width(tiny_voc, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, 'EXTRA_RUNS', demo.EXTRA_RUNS[:1])  # ce, 32 channels
    assert all(osp.isfile(osp.join(ROOT, config)) for _, config, _, _ in demo.EXTRA_RUNS)
    data_root = osp.dirname(osp.dirname(tiny_voc))
    log = []
    options = ['model.data_preprocessor.size=(32,32)', 'train_dataloader.batch_size=2']
    (run,) = demo.train_extra_runs(data_root=data_root, work_dir=str(tmp_path), repo_root=ROOT, max_iters=2,
                                   train_options=options, log=log.append)
    assert osp.isfile(osp.join(run, 'iter_1.pth')) and osp.isfile(osp.join(run, 'iter_2.pth'))
    from mmengine.config import Config

    from calibseg.study import work_dir_config
    assert Config.fromfile(work_dir_config(run)).model.decode_head.channels == 32
    demo.train_extra_runs(data_root=data_root, work_dir=str(tmp_path), repo_root=ROOT, max_iters=2, log=log.append)
    assert log[-1] == '[demo-study] ce-c32-200it: finished earlier'


def test_compare_runs_train_the_missing_recipes_as_compare_methods_does(tmp_path, monkeypatch):
    import calibseg.apis as apis
    from calibseg.apis.experiment import demo_data_options, run_name

    recipes = demo.demo_recipes(ROOT)
    assert len(recipes) == 12 and not [c for c in recipes if '/posthoc/' in c]
    done = tmp_path / run_name(recipes[0])
    done.mkdir()
    (done / 'iter_600.pth').write_bytes(b'finished')
    calls, log = [], []
    monkeypatch.setattr(apis, 'train', lambda config, **kw: calls.append((config, kw)))
    dirs = demo.train_compare_runs(data_root='data/x', work_dir=str(tmp_path), repo_root=ROOT, log=log.append)
    assert dirs == [str(tmp_path / run_name(c)) for c in recipes]
    assert [c for c, _ in calls] == recipes[1:]  # the finished run is not trained again
    config, kw = calls[0]
    assert kw == dict(work_dir=str(tmp_path / run_name(config)), quiet=True,
                      cfg_options=demo_data_options('data/x', config=config))
    assert log[0] == f'[demo-study] {run_name(recipes[0])}: finished earlier'
