"""tools/run_demo_study.py as a command line on tiny checkpoints (no training): measure and analyse; the analysis
files are replaced only with --force."""
from __future__ import annotations

import os.path as osp
import sys

from calibseg_testing import ROOT
from study_testing import make_study_models, run_tool

from calibseg.study import ANALYSIS_FILES, read_table


def test_demo_study_measures_analyses_and_resumes(tiny_voc, tmp_path):
    models = make_study_models(tmp_path, tiny_voc, sharpen=(1.0, 4.0, 2.0))
    data_root = osp.dirname(osp.dirname(tiny_voc))  # <root>/VOCdevkit/VOC2012
    out = tmp_path / 'study'
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'run_demo_study.py'), '--skip-train', '--data-root', data_root,
           '--compare-dirs', str(models['work_dir']), '--work-dir', str(tmp_path / 'runs'), '--out-dir', str(out),
           '--ts-method', 'nll']
    proc = run_tool(cmd)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = read_table(str(out / 'study.csv'))
    assert [r['name'] for r in rows] == ['wd_tiny@iter_1', 'wd_tiny@iter_2', 'wd_tiny@iter_3']
    assert {r['ts_method'] for r in rows} == {'nll'}
    assert all((out / name).is_file() for name in ANALYSIS_FILES)
    summary = (out / 'summary.md').read_text()
    assert 'tools/calibration_study.py' in summary and '--ts-method nll' in summary
    assert '--corruptions demo --corruption-severity 3' in summary  # robustness is part of the demo study
    assert {r['shift_corruptions'] for r in rows} == {'gaussian_noise+motion_blur+fog+pixelate'}
    assert (out / 'robustness.png').is_file() and "## The benchmark's seven questions" in summary
    proc = run_tool(cmd)
    assert proc.returncode == 1 and '--force' in proc.stderr


def _tool_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location('run_demo_study', osp.join(ROOT, 'tools', 'run_demo_study.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_defaults_per_dataset_and_the_measurement_command(tmp_path):
    tool = _tool_module()
    voc = tool.parse_args(['--out-dir', str(tmp_path)])
    assert (voc.data_root, voc.work_dir, voc.compare_dirs, voc.corruptions) == (
        'data/demo', 'work_dirs/study', ['work_dirs/compare/*'], ['demo'])
    assert voc.train_compare  # the 12 compare runs are trained by the study's one command
    assert not tool.parse_args(['--compare-dirs', 'runs/*']).train_compare
    assert voc.cross_table is None  # no <out-dir>/cityscapes/study.csv yet
    (tmp_path / 'cityscapes').mkdir()
    (tmp_path / 'cityscapes' / 'study.csv').write_text('x\n')
    assert tool.parse_args(['--out-dir', str(tmp_path)]).cross_table == str(tmp_path / 'cityscapes' / 'study.csv')
    city = tool.parse_args(['--dataset', 'cityscapes'])
    assert not city.train_compare
    assert (city.data_root, city.work_dir, city.out_dir, city.compare_dirs, city.corruptions, city.cross_table) == (
        'data/demo_cityscapes', 'work_dirs/study_cityscapes', osp.join('docs', 'study', 'cityscapes'), [], ['none'],
        None)
    cmd = tool.study_command(voc, ['g/*'], 't.csv')
    assert cmd[cmd.index('--cfg-options') + 1] == 'val_dataloader.dataset.data_root=data/demo/VOCdevkit/VOC2012'
    assert cmd[cmd.index('--corruptions') + 1:cmd.index('--corruption-severity') + 2] == [
        'demo', '--corruption-severity', '3']
    cmd = tool.study_command(city, ['g/*'], 't.csv')
    assert '--corruptions' not in cmd
    assert cmd[cmd.index('--cfg-options') + 1] == \
        'val_dataloader.dataset.data_root=data/demo_cityscapes/cityscapes'


def test_cityscapes_study_then_the_voc_study_reads_it(tiny_voc, tmp_path, monkeypatch):
    import calibseg.study.cityscapes as cs
    import calibseg.study.demo as demo
    from calibseg.study.demo import demo_recipes

    recipes = [c for c in demo_recipes(ROOT) if '_ce_' in c or '_ls_' in c]
    monkeypatch.setattr(demo, 'demo_recipes', lambda root: recipes)
    monkeypatch.setattr(cs, 'CITYSCAPES_DATA', dict(num_train=4, num_val=4, height=32, width=64))
    tool = _tool_module()
    city_out = tmp_path / 'study' / 'cityscapes'
    options = ['model.data_preprocessor.size=(32,64)', 'train_dataloader.batch_size=2',
               'model.decode_head.channels=16', 'model.auxiliary_head.channels=8']
    status = tool.main(['--dataset', 'cityscapes', '--data-root', str(tmp_path / 'cs'), '--work-dir',
                        str(tmp_path / 'cs_runs'), '--out-dir', str(city_out), '--max-iters', '2', '--ts-method',
                        'nll', '--train-options', *options])
    assert status == 0
    rows = read_table(str(city_out / 'study.csv'))
    assert sorted(r['name'].split('_')[2] + '@' + r['iteration'] for r in rows) == ['ce@1', 'ce@2', 'ls@1', 'ls@2']
    assert not [k for k in rows[0] if k.startswith('shift_')]
    assert 'tools/run_demo_study.py --dataset cityscapes' in (city_out / 'summary.md').read_text()
    # the VOC study (tiny models: method ce, 16 channels) finds the Cityscapes table and matches the ce recipe
    models = make_study_models(tmp_path, tiny_voc, sharpen=(1.0, 4.0, 2.0))
    status = tool.main(['--skip-train', '--data-root', osp.dirname(osp.dirname(tiny_voc)), '--compare-dirs',
                        str(models['work_dir']), '--work-dir', str(tmp_path / 'runs'), '--out-dir',
                        str(tmp_path / 'study'), '--ts-method', 'nll', '--corruptions', 'fog'])
    assert status == 0
    summary = (tmp_path / 'study' / 'summary.md').read_text()
    assert 'not answerable: only 1 recipes are in both tables' in summary
    assert '--cross-table' in summary and 'under fog' in summary
    assert {r['shift_corruptions'] for r in read_table(str(tmp_path / 'study' / 'study.csv'))} == {'fog'}
