"""calibseg.study robustness and cross-dataset analysis and the seven questions: taus against pair counting and
scipy, recipe matching, the report's sections, old tables."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from study_testing import naive_tau_b, synthetic_study

from calibseg.study import tau_noise
from calibseg.study.analysis import (
    ANALYSIS_FILES,
    TAU_METRICS,
    analyze,
    cross_dataset_taus,
    final_recipes,
    load_study,
    robustness_taus,
    ts_rank_taus,
)
from calibseg.study.questions import QUESTIONS, sureness

METRICS = ('ECE_15', 'NLL', 'KDECE', 'mIoU')


def _recipe_table(path, runs, seed):
    """A study table of training runs: ``runs`` is ``[(run name, method, channels, (iterations...))]``; each
    checkpoint is a row with random metric values (returned as ``{(run, iteration): row}``)."""
    rng = np.random.default_rng(seed)
    rows = {}
    for run, method, channels, iterations in runs:
        for it in iterations:
            row = {'model_id': f'{run}-{it}', 'name': f'{run}@iter_{it}', 'method': method, 'iteration': it,
                   'decode_channels': channels, 'T': 1.0}
            for key in METRICS:
                row[key] = rng.uniform(1, 10)
                row[f'post_{key}'] = rng.uniform(1, 10) if key != 'mIoU' else row[key]
            rows[(run, it)] = row
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(next(iter(rows.values()))), lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows.values())
    return rows


VOC_RUNS = [(f'fcn_r18-d16_{m}_1xb8-600it_demo-voc12aug-96x96', m, 128, (300, 600))
            for m in ('ce', 'focal', 'ls', 'mbls', 'mdca', 'nacl', 'svls')] + [
    ('ce-c32-200it', 'ce', 32, (100, 200)),          # another recipe (width): unmatched
    ('ls-again', 'ls', 128, (50, 100))]              # a shorter run of a matched recipe: left out
CITY_RUNS = [(f'fcn_r18-d16_{m}_1xb8-200it_demo-cityscapes-64x128', m, 128, (100, 200))
             for m in ('ce', 'focal', 'ls', 'mbls', 'mdca', 'nacl', 'acls')]


@pytest.fixture()
def recipe_tables(tmp_path):
    voc, city = tmp_path / 'voc.csv', tmp_path / 'city.csv'
    return voc, _recipe_table(voc, VOC_RUNS, 0), city, _recipe_table(city, CITY_RUNS, 1)


def test_cross_dataset_tau_is_tau_b_of_the_final_checkpoints(recipe_tables):
    scipy_stats = pytest.importorskip('scipy.stats')
    voc, voc_rows, city, city_rows = recipe_tables
    cross = cross_dataset_taus(load_study(str(voc)), load_study(str(city)))
    matched = ['ce', 'focal', 'ls', 'mbls', 'mdca', 'nacl']
    assert cross['recipes'] == [(m, '128') for m in matched] and cross['n'] == 6
    assert cross['only_first'] == [('ce', '32'), ('svls', '128')] and cross['only_second'] == [('acls', '128')]
    assert len(cross['notes']) == 1 and cross['notes'][0].startswith('ls-again@iter_100 left out')
    assert sorted(cross['taus']) == sorted(METRICS)
    for key in METRICS:
        for stage, column in ((0, key), (1, key if key == 'mIoU' else f'post_{key}')):
            a = [voc_rows[(f'fcn_r18-d16_{m}_1xb8-600it_demo-voc12aug-96x96', 600)][column] for m in matched]
            b = [city_rows[(f'fcn_r18-d16_{m}_1xb8-200it_demo-cityscapes-64x128', 200)][column] for m in matched]
            expected = scipy_stats.kendalltau(a, b).statistic  # tau-b
            assert cross['taus'][key][stage] == pytest.approx(expected, abs=1e-12)
            assert cross['taus'][key][stage] == pytest.approx(naive_tau_b(a, b), abs=1e-12)


def test_a_hand_counted_cross_dataset_tau(tmp_path):
    # four recipes; ECE_15 ranks on the second table: a<b<c<d vs b<a<c<d -> 5 concordant, 1 discordant pair
    runs = [(f'run-{m}', m, 64, (10,)) for m in 'abcd']
    first = _recipe_table(tmp_path / 'a.csv', runs, 0)
    second = _recipe_table(tmp_path / 'b.csv', runs, 1)
    for table, values in ((first, (1, 2, 3, 4)), (second, (2, 1, 3, 4))):
        for m, v in zip('abcd', values):
            table[(f'run-{m}', 10)]['ECE_15'] = v
    for path, rows in ((tmp_path / 'a.csv', first), (tmp_path / 'b.csv', second)):
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(next(iter(rows.values()))), lineterminator='\n')
            writer.writeheader()
            writer.writerows(rows.values())
    cross = cross_dataset_taus(load_study(str(tmp_path / 'a.csv')), load_study(str(tmp_path / 'b.csv')))
    assert cross['taus']['ECE_15'][0] == pytest.approx((5 - 1) / 6)


def test_final_recipes_need_the_recipe_columns(tmp_path):
    table = tmp_path / 'old.csv'
    synthetic_study(table)
    numeric, text = load_study(str(table))
    del text['name']
    with pytest.raises(KeyError, match="lacks \\['name'\\]"):
        final_recipes((numeric, text))


def test_robustness_taus_are_tau_b_of_the_columns(tmp_path):
    table = tmp_path / 'study.csv'
    rows = synthetic_study(table, shift=True)
    taus = robustness_taus(load_study(str(table))[0])
    column = {k: [r[k] for r in rows] for k in rows[0]}
    for key in ('ECE_15', 'NLL', 'KDECE', 'AUROC'):
        got = taus[key]
        assert got['drop~pre'] == pytest.approx(naive_tau_b(column['mIoU_drop'], column[key]), abs=1e-12)
        assert got['drop~post'] == pytest.approx(naive_tau_b(column['mIoU_drop'], column[f'post_{key}']), abs=1e-12)
        assert got['shift_mIoU~post'] == pytest.approx(naive_tau_b(column['shift_mIoU'], column[f'post_{key}']),
                                                       abs=1e-12)
        assert got['clean~shift'] == pytest.approx(naive_tau_b(column[key], column[f'shift_{key}']), abs=1e-12)
    assert 'clean~shift' not in taus['MCE_15']  # no shift_MCE_15 column in this table
    assert taus['_']['n'] == 25 and taus['_']['mIoU~drop'] == pytest.approx(
        naive_tau_b(column['mIoU'], column['mIoU_drop']))
    assert taus['ECE_15']['drop~pre'] > 2 * tau_noise(25)  # built in: the drop follows the miscalibration
    assert robustness_taus(load_study(str(tmp_path / 'study.csv'))[0]) == taus
    synthetic_study(tmp_path / 'clean.csv')
    assert robustness_taus(load_study(str(tmp_path / 'clean.csv'))[0]) == {}


def test_ts_rank_taus(tmp_path):
    rows = synthetic_study(tmp_path / 'study.csv')
    numeric, _ = load_study(str(tmp_path / 'study.csv'))
    taus = ts_rank_taus(numeric, TAU_METRICS)
    assert 'mIoU' not in taus and taus['NLL'] == pytest.approx(
        naive_tau_b([r['NLL'] for r in rows], [r['post_NLL'] for r in rows]))


def test_report_sections_figures_and_stale_files(tmp_path, recipe_tables):
    table = tmp_path / 'study.csv'
    synthetic_study(table, shift=True)
    out = tmp_path / 'analysis'
    voc, _, city, _ = recipe_tables
    paths = analyze(str(table), str(out))
    assert sorted(paths) == sorted([*ANALYSIS_FILES, 'robustness.png', 'robustness_tau.csv'])
    assert (out / 'robustness.png').read_bytes()[:4] == b'\x89PNG'
    with open(out / 'robustness_tau.csv') as f:
        ece = next(r for r in csv.DictReader(f) if r['metric'] == 'ECE_15')
    assert float(ece['drop~pre']) == pytest.approx(robustness_taus(load_study(str(table))[0])['ECE_15']['drop~pre'],
                                                   abs=1e-4)
    summary = (out / 'summary.md').read_text()
    assert summary.index("## The benchmark's seven questions") < summary.index('## Agreement between metrics')
    for number, (key, question) in enumerate(QUESTIONS, 1):
        assert f'{number}. **{key}** — {question}' in summary
    assert '## Robustness and calibration' in summary and '](robustness.png)' in summary
    assert 'under gaussian_noise+fog' in summary and 'corr. mIoU' in summary
    assert '**cannot be answered by this data**: all 25 models are FCN heads on ResNetV1c-18' in summary
    assert '(i) cross-dataset** — ' in summary and '**not measured here**: no second-dataset table' in summary
    # a second study on another dataset adds the cross-dataset files and answer
    paths = analyze(str(voc), str(tmp_path / 'voc'), cross_table=str(city))
    assert {'cross_dataset.png', 'cross_dataset_tau.csv'} <= set(paths)
    summary = (tmp_path / 'voc' / 'summary.md').read_text()
    assert '6 recipes matched by method at their final checkpoints between this table and the Cityscapes demo' in \
        summary
    assert '[`city.csv`](../city.csv)' in summary and 'only in the Cityscapes demo table: acls (128 ch)' in summary
    assert '**not measured here**: the table has no robustness columns' in summary
    # a forced analysis of a table without that data removes the stale optional files
    synthetic_study(table)
    with pytest.raises(FileExistsError):
        analyze(str(table), str(out))
    paths = analyze(str(table), str(out), force=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(ANALYSIS_FILES) == sorted(paths)
    assert 'Not measured: the table has no robustness columns' in (out / 'summary.md').read_text()


def test_an_old_table_is_analysed_and_a_cross_table_without_recipes_is_refused(tmp_path):
    old = tmp_path / 'old.csv'
    synthetic_study(old)  # a plain CSV without checksums, robustness or protocol columns, as older tables were
    text = old.read_text().replace(',backbone', ',x').replace(',ResNetV1c-18', ',')
    old.write_text(text)
    paths = analyze(str(old), str(tmp_path / 'out'))
    assert sorted(paths) == sorted(ANALYSIS_FILES)
    summary = (tmp_path / 'out' / 'summary.md').read_text()
    assert 'all 25 models are FCN heads on one backbone' in summary
    lines = text.splitlines()
    header = lines[0].split(',')
    index = header.index('iteration')
    stripped = '\n'.join(','.join(c for j, c in enumerate(line.split(',')) if j != index) for line in lines)
    (tmp_path / 'no_iter.csv').write_text(stripped + '\n')
    numeric, _ = load_study(str(tmp_path / 'no_iter.csv'))
    assert 'iteration' not in numeric
    with pytest.raises(KeyError, match='recipes cannot be matched'):
        analyze(str(old), str(tmp_path / 'out2'), cross_table=str(tmp_path / 'no_iter.csv'))


@pytest.mark.parametrize('tau, verdict', [(0.5, 'beyond noise'), (0.2, 'weak'), (-0.2, 'weak'),
                                          (0.1, 'within noise')])
def test_sureness_levels(tau, verdict):
    sigma = tau_noise(30)  # 0.131
    assert 0.1 < sigma < 0.2 < 2 * sigma < 0.5
    assert sureness(tau, 30) == f'tau {tau:+.2f} (n 30, noise +-{sigma:.2f}: {verdict})'
    assert sureness(math.nan, 30) == 'tau undefined (n 30)'
