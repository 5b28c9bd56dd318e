"""tools/analyze_study.py: Kendall tau-b against a naive pair count, figures and summary from a synthetic study."""
from __future__ import annotations

import csv
import importlib.util
import itertools
import math
import os.path as osp

import numpy as np
import pytest
from calibseg_testing import ROOT


def _load_tool():
    spec = importlib.util.spec_from_file_location('analyze_study', osp.join(ROOT, 'tools', 'analyze_study.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


analyze_study = _load_tool()


def naive_tau_b(x, y):
    """Kendall's tau-b by counting every pair (Kendall 1945), NaN pairs dropped."""
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    concordant = discordant = tied_x = tied_y = 0
    for (x1, y1), (x2, y2) in itertools.combinations(pairs, 2):
        s = np.sign(x1 - x2) * np.sign(y1 - y2)
        concordant += s > 0
        discordant += s < 0
        tied_x += x1 == x2
        tied_y += y1 == y2
    n0 = len(pairs) * (len(pairs) - 1) // 2
    denominator = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return (concordant - discordant) / denominator if denominator else math.nan


@pytest.mark.parametrize('n', [2, 3, 8, 33, 100])
def test_kendall_tau_b_equals_the_naive_pair_count_with_ties(n):
    rng = np.random.default_rng(n)
    for levels in (3, 10, 1000):  # heavy ties, some ties, almost none
        x = rng.integers(0, levels, n).astype(float)
        y = (x + rng.integers(0, levels, n)).astype(float)
        expected = naive_tau_b(x, y)
        got = analyze_study.kendall_tau_b(x, y)
        assert (math.isnan(expected) and math.isnan(got)) or got == pytest.approx(expected, abs=1e-12)


def test_kendall_tau_b_agrees_with_scipy_and_skips_non_finite_pairs():
    stats = pytest.importorskip('scipy.stats')
    rng = np.random.default_rng(0)
    x = rng.normal(size=400).round(1)
    y = x + rng.normal(size=400).round(1)
    assert analyze_study.kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    x[[3, 7]], y[11] = np.nan, np.inf
    keep = np.isfinite(x) & np.isfinite(y)
    assert analyze_study.kendall_tau_b(x, y) == pytest.approx(naive_tau_b(x[keep], y[keep]), abs=1e-12)


def test_kendall_tau_b_limits_and_undefined_cases():
    x = np.arange(10.0)
    assert analyze_study.kendall_tau_b(x, x ** 3) == 1.0
    assert analyze_study.kendall_tau_b(x, -x) == -1.0
    assert math.isnan(analyze_study.kendall_tau_b(x, np.ones(10)))  # a constant ranking
    assert math.isnan(analyze_study.kendall_tau_b([1.0], [2.0]))
    with pytest.raises(ValueError, match='same length'):
        analyze_study.kendall_tau_b([1.0, 2.0], [1.0])


def test_count_inversions_equals_brute_force():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5, 31, 64, 100):
        v = rng.integers(0, 6, n)
        brute = sum(int(v[i] > v[j]) for i in range(n) for j in range(i + 1, n))
        assert analyze_study.count_inversions(v) == brute


FAMILIES = ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE')
BINS = (5, 10, 15, 20, 25, 50, 100, 200, 500)
SCALARS = ('RMSCE_15', 'dECE_15', 'KSCE', 'KDECE', 'MMCE', 'smECE', 'SECE', 'NLL', 'Brier', 'AUROC', 'AURC', 'HCS')


def synthetic_study(path, n=25, seed=0):
    """A study table shaped like calibration_study.py's: errors driven by a latent miscalibration per model,
    smaller and noisier after TS, more bin-dependent after TS."""
    rng = np.random.default_rng(seed)
    methods = ['ce', 'focal', 'ls', 'mbls', 'mdca']
    rows = []
    for i in range(n):
        miscal = rng.uniform(1, 10)
        miou = rng.uniform(20, 60)
        row = {'model_id': f'id{i}', 'name': f'run{i % 7}@iter_{100 * (1 + i % 3)}', 'method': methods[i % 5],
               'loss': 'CrossEntropyLoss', 'iteration': 100 * (1 + i % 3), 'decode_channels': 32 * (1 + i % 4),
               'fit_split': 'val:held_out', 'test_split': 'val:train', 'ts_method': 'nll',
               'T': rng.uniform(0.7, 2.0), 'mIoU': miou, 'aAcc': miou + 30}
        for stage, scale in (('', 1.0), ('post_', 0.3)):
            for family in FAMILIES:
                for b in BINS:
                    spread = 0.02 if stage == '' else 0.2  # post-TS values depend more on the bin count
                    row[f'{stage}{family}_{b}'] = scale * miscal * (1 + spread * math.log(b / 15)) + \
                        rng.normal(0, 0.1 + 0.5 * (stage == 'post_') * b / 500)
            for key in SCALARS:
                row[f'{stage}{key}'] = scale * miscal + rng.normal(0, 1.0)
            row[f'{stage}ECE'] = row[f'{stage}ECE_15']
        rows.append(row)
    rows[-1]['AUROC'] = math.nan  # undefined AUROC (all pixels right) is skipped pairwise
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_analysis_writes_figures_matrices_and_summary(tmp_path):
    table = tmp_path / 'study.csv'
    rows = synthetic_study(table)
    out = tmp_path / 'analysis'
    analyze_study.main([str(table), '--out-dir', str(out), '--reproduce', 'python tools/run_demo_study.py'])
    for name in ('kendall_tau.png', 'bin_sensitivity.png', 'accuracy_vs_calibration.png', 'ts_gain.png'):
        data = (out / name).read_bytes()
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000, name
    # the tau matrices hold tau-b of the named columns, pre and post
    for stage, prefix in (('pre', ''), ('post', 'post_')):
        with open(out / f'kendall_tau_{stage}.csv') as f:
            matrix = {r['metric']: r for r in csv.DictReader(f)}
        assert list(matrix) == [k for k in analyze_study.TAU_METRICS]
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
    assert summary.count('| run') == 25  # one line per model
    # key numbers match the table
    ece = np.array([r['ECE_15'] for r in rows])
    post = np.array([r['post_ECE_15'] for r in rows])
    assert f'ECE_15 median {np.median(ece):.2f} -> {np.median(post):.2f}' in summary
    assert f'lowers ECE_15 for {int((post < ece).sum())}/25 models' in summary
    gain = naive_tau_b(ece, ece - post)
    assert f'tau(pre-TS ECE_15, gain in ECE_15) = {gain:.2f}' in summary


def test_bin_sensitivity_reports_tau_to_15_bins_pre_and_post(tmp_path):
    table = tmp_path / 'study.csv'
    rows = synthetic_study(table, seed=3)
    numeric, _ = analyze_study.load_study(str(table))
    result = analyze_study.bin_sensitivity(numeric)
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


def test_analysis_rejects_tables_that_are_not_studies(tmp_path):
    table = tmp_path / 'other.csv'
    table.write_text('a,b\n1,2\n3,4\n5,6\n')
    with pytest.raises(KeyError, match='calibration_study.py'):
        analyze_study.analyze(str(table), str(tmp_path / 'out'))
    synthetic_study(table, n=2)
    with pytest.raises(ValueError, match='at least 3'):
        analyze_study.analyze(str(table), str(tmp_path / 'out'))
