"""calibseg.study robustness columns on tiny checkpoints: values against a direct computation with mmseg's own
test_step on a hand-built corrupted pipeline, clean columns unchanged, resume, and tables of the other kind refused
with a clear message."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from study_testing import direct_metrics, make_study_models, mmseg_predictions, pooled

from calibseg.study import StudyProtocol, discover_models, read_table, run_study
from calibseg.study.measure import SHIFT_METRICS, shift_means

CPU = torch.device('cpu')
CORRUPTIONS = ('gaussian_noise', 'fog')
SEVERITY = 4


@pytest.fixture(scope='module')
def models(tiny_voc, tmp_path_factory):
    return make_study_models(tmp_path_factory.mktemp('shift'), tiny_voc)


def _specs(models):
    return [s for s in discover_models(work_dirs=[str(models['work_dir'])], all_checkpoints=True)
            if s.name == 'wd_tiny@iter_2']


@pytest.fixture(scope='module')
def tables(models):
    """The same model measured without and with corruptions, into two tables."""
    out = {}
    for kind, corruptions in (('clean', ()), ('shift', CORRUPTIONS)):
        path = models['root'] / f'{kind}.csv'
        log = []
        protocol = StudyProtocol(ts_method='nll', corruptions=corruptions, corruption_severity=SEVERITY)
        assert run_study(_specs(models), out=str(path), protocol=protocol, device=CPU, log_every=0,
                         log=log.append) == (1, 0)
        out[kind] = dict(path=path, rows=read_table(str(path)), log=log, protocol=protocol)
    return out


def _corrupted_test_part(cfg, corruption):
    """The study's test part (HeldOutSplit part='train') with CorruptImage written into the pipeline by hand."""
    dataset = copy.deepcopy(cfg.val_dataloader.dataset)
    pipeline = list(dataset.pipeline)
    assert pipeline[0]['type'] == 'LoadImageFromFile'
    dataset.pipeline = [pipeline[0], dict(type='CorruptImage', corruption=corruption, severity=SEVERITY),
                        *pipeline[1:]]
    return dict(type='HeldOutSplit', dataset=dataset, part='train', held_out=0.5, seed=0)


def test_shift_columns_match_a_direct_computation(models, tables):
    (row,) = tables['shift']['rows']
    t = float(row['T'])
    checkpoint = str(models['work_dir'] / 'iter_2.pth')
    per_corruption = []
    for corruption in CORRUPTIONS:
        z, y = pooled(*mmseg_predictions(models['cfg'], checkpoint, _corrupted_test_part(models['cfg'], corruption)))
        assert y.numel() == int(row['test_pixels'])  # the same pixels as the clean test pass
        pre, post = direct_metrics(z, y), direct_metrics(z, y, temperature=t)
        per_corruption.append((pre, post))
    mean = {k: sum(p[k] for p, _ in per_corruption) / len(CORRUPTIONS) for k in per_corruption[0][0]}
    post_mean = {k: sum(p[k] for _, p in per_corruption) / len(CORRUPTIONS) for k in per_corruption[0][1]}
    assert float(row['shift_mIoU']) == pytest.approx(mean['mIoU'], rel=1e-9)
    assert float(row['shift_aAcc']) == pytest.approx(mean['aAcc'], rel=1e-9)
    assert float(row['mIoU_drop']) == pytest.approx(float(row['mIoU']) - mean['mIoU'], rel=1e-9)
    assert float(row['shift_NLL']) == pytest.approx(mean['NLL'], rel=1e-5)
    assert float(row['post_shift_NLL']) == pytest.approx(post_mean['NLL'], rel=1e-5)
    assert float(row['shift_ECE_15']) == pytest.approx(mean['ECE_15'], abs=1e-4)
    assert float(row['post_shift_ECE_15']) == pytest.approx(post_mean['ECE_15'], abs=1e-4)
    a = [(p['aAcc'] / 100, 1 - p['ECE_15'] / 100) for p, _ in per_corruption]
    assert float(row['shift_HCS']) == pytest.approx(sum(100 * 2 * x * c / (x + c) for x, c in a) / 2, abs=1e-3)
    assert float(row['post_shift_Acc']) == pytest.approx(float(row['shift_Acc']))  # TS keeps the prediction
    # the corruptions change the predictions (else this test would not test the corrupted pipeline)
    assert mean['NLL'] != pytest.approx(float(row['NLL']), rel=1e-3)


def test_shift_columns_schema_and_the_clean_part_is_unchanged(tables):
    (clean,), (shift,) = tables['clean']['rows'], tables['shift']['rows']
    assert shift['shift_corruptions'] == '+'.join(CORRUPTIONS) and shift['shift_severity'] == str(SEVERITY)
    assert float(shift['shift_seconds']) > 0
    for key in SHIFT_METRICS:
        assert f'shift_{key}' in shift, key
        assert (f'post_shift_{key}' in shift) == (key not in ('mIoU', 'aAcc')), key
    assert not [k for k in clean if 'shift' in k or k == 'mIoU_drop']  # no robustness columns without corruptions
    for key in ('T', 'mIoU', 'aAcc', 'ECE_15', 'post_ECE_15', 'NLL', 'post_NLL', 'KDECE', 'test_pixels'):
        assert shift[key] == clean[key], key  # measured exactly as without corruptions
    assert shift['protocol_id'] != clean['protocol_id']
    assert any(line.startswith('[study]   under 2 corruption(s) at severity 4: mIoU ')
               for line in tables['shift']['log'])


def test_resume_and_tables_of_the_other_kind_are_refused_clearly(models, tables):
    shift = tables['shift']
    before = shift['path'].read_bytes()
    log = []
    assert run_study(_specs(models), out=str(shift['path']), protocol=shift['protocol'], device=CPU, log_every=0,
                     log=log.append) == (0, 0)
    assert shift['path'].read_bytes() == before and any(line.startswith('[study] skip ') for line in log)
    with pytest.raises(ValueError, match='measured without corruptions'):
        run_study(_specs(models), out=str(tables['clean']['path']), protocol=shift['protocol'], device=CPU,
                  log_every=0, log=lambda _: None)
    with pytest.raises(ValueError, match="measured under corruptions 'gaussian_noise\\+fog'"):
        run_study(_specs(models), out=str(shift['path']), protocol=tables['clean']['protocol'], device=CPU,
                  log_every=0, log=lambda _: None)


def test_shift_means_average_per_corruption_values():
    clean = {'mIoU': 40.0}
    corrupted = [{'mIoU': 30.0, 'aAcc': 70.0, 'ECE_15': 5.0, 'post_ECE_15': 3.0, 'NLL': 1.0, 'post_NLL': 0.8},
                 {'mIoU': 20.0, 'aAcc': 60.0, 'ECE_15': 9.0, 'post_ECE_15': 4.0, 'NLL': math.nan, 'post_NLL': 1.0}]
    out = shift_means(clean, corrupted)
    assert out['shift_mIoU'] == 25.0 and out['mIoU_drop'] == 15.0 and out['shift_aAcc'] == 65.0
    assert out['shift_ECE_15'] == 7.0 and out['post_shift_ECE_15'] == 3.5 and out['post_shift_NLL'] == 0.9
    assert math.isnan(out['shift_NLL'])  # an undefined value in one corruption is not averaged away
    assert 'post_shift_mIoU' not in out and 'shift_KDECE' not in out  # absent keys stay absent
    with pytest.raises(ValueError, match='no corrupted pass'):
        shift_means(clean, [])
