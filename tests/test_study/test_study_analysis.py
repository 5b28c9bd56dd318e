"""calibseg.study.analysis: statistics and the report from a synthetic study; files refused unless forced."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from study_testing import BINS, FAMILIES, naive_tau_b, synthetic_study

from calibseg.study.analysis import (
    ANALYSIS_FILES,
    TAU_METRICS,
    accuracy_taus,
    analyze,
    bin_sensitivity,
    load_study,
    ts_gains,
)


def test_analysis_writes_figures_matrices_and_summary(tmp_path):
    table = tmp_path / 'study.csv'
    rows = synthetic_study(table)
    out = tmp_path / 'analysis'
    paths = analyze(str(table), str(out), reproduce=['python tools/run_demo_study.py'])
    assert sorted(paths) == sorted(ANALYSIS_FILES)
    for name in ('kendall_tau.png', 'bin_sensitivity.png', 'accuracy_vs_calibration.png', 'ts_gain.png'):
        data = (out / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000, name
    assert sorted(p.name for p in out.iterdir()) == sorted(ANALYSIS_FILES)  # no temporary file left
    # the tau matrices hold tau-b of the named columns, pre and post
    for stage, prefix in (('pre', ''), ('post', 'post_')):
        with open(out / f'kendall_tau_{stage}.csv') as f:
            matrix = {r['metric']: r for r in csv.DictReader(f)}
        assert list(matrix) == list(TAU_METRICS)
        for a, b in (('ECE_15', 'NLL'), ('cwCE_em_15', 'MMCE'), ('AUROC', 'ECE_15'), ('mIoU', 'SECE')):
            ka = a if a in ('mIoU', 'aAcc') else prefix + a
            kb = b if b in ('mIoU', 'aAcc') else prefix + b
            expected = naive_tau_b([r[ka] for r in rows], [r[kb] for r in rows])
            assert float(matrix[a][b]) == pytest.approx(expected, abs=1e-4)
        assert float(matrix['ECE_15']['ECE_15']) == 1.0
    summary = (out / 'summary.md').read_text()
    assert summary.startswith('# Calibration study: 25 segmentation models')
    assert summary.index('python tools/run_demo_study.py') < summary.index('## Agreement')
    for figure in ('kendall_tau.png', 'bin_sensitivity.png', 'accuracy_vs_calibration.png', 'ts_gain.png'):
        assert f']({figure})' in summary
    assert '[`study.csv`](../study.csv)' in summary
    assert '- ts_method: `grid-ece`' in summary
    assert summary.count('| run') == 25  # one line per model
    ece = np.array([r['ECE_15'] for r in rows])
    post = np.array([r['post_ECE_15'] for r in rows])
    assert f'ECE_15 median {np.median(ece):.2f} -> {np.median(post):.2f}' in summary
    assert f'lowers ECE_15 for {int((post < ece).sum())}/25 models' in summary
    gain = naive_tau_b(ece, ece - post)
    assert f'tau(pre-TS ECE_15, gain in ECE_15) = {gain:.2f}' in summary
    miou = [r['mIoU'] for r in rows]
    assert f'tau(mIoU, post_ECE_15) = {naive_tau_b(miou, post):.2f}' in summary


def test_existing_outputs_are_refused_unless_forced(tmp_path):
    table = tmp_path / 'study.csv'
    synthetic_study(table)
    out = tmp_path / 'analysis'
    out.mkdir()
    (out / 'summary.md').write_text('my notes')
    with pytest.raises(FileExistsError, match='summary.md'):
        analyze(str(table), str(out))
    assert (out / 'summary.md').read_text() == 'my notes'
    analyze(str(table), str(out), force=True)
    assert (out / 'summary.md').read_text().startswith('# Calibration study')


def test_statistics_are_those_of_the_columns(tmp_path):
    table = tmp_path / 'study.csv'
    rows = synthetic_study(table, seed=3)
    numeric, text = load_study(str(table))
    assert text['method'][:2] == ['ce', 'focal'] and numeric['iteration'][0] == 100
    result = bin_sensitivity(numeric)
    assert list(result) == list(FAMILIES)
    for stage, prefix in (('pre', ''), ('post', 'post_')):
        points = {b: (tau, ratio) for b, tau, ratio in result['ECE'][stage]}
        assert sorted(points) == list(BINS)
        assert points[15] == (1.0, 1.0)
        ref = [r[f'{prefix}ECE_15'] for r in rows]
        value = [r[f'{prefix}ECE_500'] for r in rows]
        assert points[500][0] == pytest.approx(naive_tau_b(value, ref), abs=1e-12)
        assert points[500][1] == pytest.approx(float(np.median(np.array(value) / np.array(ref))))
    # the synthetic post-TS values were made more bin-dependent: tau to B=15 is lower after TS
    assert dict((b, t) for b, t, _ in result['ECE']['post'])[500] < dict(
        (b, t) for b, t, _ in result['ECE']['pre'])[500]
    taus = accuracy_taus(numeric)
    assert sorted(taus) == ['mIoU~ECE_15', 'mIoU~NLL', 'mIoU~post_ECE_15', 'mIoU~post_NLL']
    assert taus['mIoU~NLL'] == pytest.approx(naive_tau_b([r['mIoU'] for r in rows], [r['NLL'] for r in rows]))
    gains = ts_gains(numeric)
    gain, tau = gains['NLL']
    expected = np.array([r['NLL'] - r['post_NLL'] for r in rows])
    assert np.allclose(gain, expected)
    assert tau == pytest.approx(naive_tau_b([r['NLL'] for r in rows], expected))


def test_analysis_rejects_tables_that_are_not_studies(tmp_path):
    table = tmp_path / 'other.csv'
    table.write_text('a,b\n1,2\n3,4\n5,6\n')
    with pytest.raises(KeyError, match='calibration study table'):
        analyze(str(table), str(tmp_path / 'out'))
    synthetic_study(table, n=2)
    with pytest.raises(ValueError, match='at least 3'):
        analyze(str(table), str(tmp_path / 'out'))
    with pytest.raises(FileNotFoundError):
        analyze(str(tmp_path / 'missing.csv'), str(tmp_path / 'out'))
