"""tools/analyze_study.py as a command line: figures and summary from a synthetic study, outputs kept unless
--force, a clear error for a table that is not a study (the analysis itself: tests/test_study)."""
from __future__ import annotations

import os.path as osp
import subprocess
import sys

from calibseg_testing import ROOT
from study_testing import synthetic_study

from calibseg.study import ANALYSIS_FILES

TOOL = osp.join(ROOT, 'tools', 'analyze_study.py')


def _run(*args):
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=300)


def test_analysis_command_line(tmp_path):
    table = tmp_path / 'study.csv'
    synthetic_study(table)
    out = tmp_path / 'analysis'
    proc = _run(str(table), '--out-dir', str(out), '--reproduce', 'python tools/run_demo_study.py')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(ANALYSIS_FILES)
    summary = (out / 'summary.md').read_text()
    assert summary.startswith('# Calibration study: 25 segmentation models')
    assert 'python tools/run_demo_study.py' in summary
    (out / 'summary.md').write_text('edited')
    proc = _run(str(table), '--out-dir', str(out))
    assert proc.returncode == 1 and '--force' in proc.stderr
    assert (out / 'summary.md').read_text() == 'edited'


def test_tables_that_are_not_studies_get_a_clear_error(tmp_path):
    table = tmp_path / 'other.csv'
    table.write_text('a,b\n1,2\n3,4\n5,6\n')
    proc = _run(str(table), '--out-dir', str(tmp_path / 'out'))
    assert proc.returncode == 1 and 'calibration study table' in proc.stderr
