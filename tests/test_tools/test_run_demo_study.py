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
    proc = run_tool(cmd)
    assert proc.returncode == 1 and '--force' in proc.stderr
