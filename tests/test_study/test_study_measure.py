"""calibseg.study measurement and runs on tiny checkpoints: schema, values against a direct computation with mmseg's
own test_step, the temperature fit against TemperatureScaling, failures, resume, the protocol guard."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from study_testing import BINS, K, make_study_models, mmseg_predictions

from calibseg.calibrators import TemperatureScaling
from calibseg.study import StudyProtocol, discover_models, read_table, run_study
from calibseg.study.measure import accuracy_metrics, fit_temperature, iou_areas

CPU = torch.device('cpu')


@pytest.fixture(scope='module')
def models(tiny_voc, tmp_path_factory):
    return make_study_models(tmp_path_factory.mktemp('study'), tiny_voc)


def _specs(models):
    return discover_models(models=[f"{models['config']}:{models['broken']}"],
                           work_dirs=[str(models['root'] / 'wd_*')], all_checkpoints=True)


def _run(models, out, protocol, log=None):
    return run_study(_specs(models), out=str(out), protocol=protocol, device=CPU, log_every=0,
                     log=(log.append if log is not None else lambda _: None))


@pytest.fixture(scope='module')
def nll_run(models):
    out = models['root'] / 'study.csv'
    log = []
    measured, failed = _run(models, out, StudyProtocol(ts_method='nll'), log)
    return dict(out=out, measured=measured, failed=failed, rows=read_table(str(out)), log=log)


def _predictions(models, checkpoint):
    """``{part: (logits, labels)}`` of every image of both parts of the default split (mmseg's ``test_step``)."""
    cfg = models['cfg']
    return {part: mmseg_predictions(cfg, checkpoint, dict(type='HeldOutSplit', dataset=cfg.val_dataloader.dataset,
                                                             part=part, held_out=0.5, seed=0))
            for part in ('held_out', 'train')}


def test_schema_one_row_per_model_and_post_ts_columns(nll_run):
    rows = nll_run['rows']
    assert [r['name'] for r in rows] == ['wd_tiny@iter_1', 'wd_tiny@iter_2']
    columns = list(rows[0])
    calibration = [f'{fam}_{b}' for fam in ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE') for b in BINS] + [
        'KSCE', 'KDECE', 'MMCE', 'NLL', 'Brier', 'smECE', 'SECE', 'AUROC', 'AURC', 'HCS']
    expected = ['model_id', 'name', 'method', 'loss', 'iteration', 'decode_channels', 'config', 'checkpoint',
                'test_pixels', 'T', 'converged', 'T_at_bound', 'ts_method', 'started_at', 'finished_at', 'mIoU', 'aAcc',
                *calibration, *[f'post_{k}' for k in calibration]]
    assert not [c for c in expected if c not in columns]
    assert columns.index('model_id') == 0 and columns.index('mIoU') < columns.index('ECE_15') < \
        columns.index('post_ECE_15')
    for row in rows:
        assert row['method'] == 'ce'  # the method field of the config name
        assert row['loss'] == 'CrossEntropyLoss' and row['decode_channels'] == '16'
        assert row['fit_images'] == '2' and row['test_images'] == '3'  # 5 val images: 2 fit, 3 test
        assert int(row['test_pixels']) > 0 and row['ts_method'] == 'nll' and row['converged'] == 'True'
    assert [r['iteration'] for r in rows] == ['1', '2']
    for row in rows:  # whether T lies at an end of the NLL search range [0.01, 100]
        at_bound = float(row['T']) == pytest.approx(0.01) or float(row['T']) == pytest.approx(100.0)
        assert row['T_at_bound'] == str(at_bound)
    assert rows[0]['model_id'] != rows[1]['model_id']


def test_values_match_a_direct_computation_from_the_logits(models, nll_run):
    row = nll_run['rows'][1]
    predictions = _predictions(models, str(models['work_dir'] / 'iter_2.pth'))
    fit_z, fit_y = predictions['held_out']
    ts = TemperatureScaling(num_classes=K).fit([(z[None], y[None]) for z, y in zip(fit_z, fit_y)])
    t = float(row['T'])
    assert t == pytest.approx(ts.fit_info['temperature'], rel=1e-6)
    assert t > 1.5  # the sharpened head is overconfident
    z, y = predictions['train']
    logits = torch.cat([v.reshape(K, -1) for v in z], 1).t()
    labels = torch.cat([v.reshape(-1) for v in y]).long()
    keep = labels != 255
    logits, labels = logits[keep], labels[keep]
    assert int(row['test_pixels']) == labels.numel()
    nll = F.cross_entropy(logits.double(), labels)
    post_nll = F.cross_entropy(logits.double() / t, labels)
    assert float(row['NLL']) == pytest.approx(float(nll), rel=1e-5)
    assert float(row['post_NLL']) == pytest.approx(float(post_nll), rel=1e-5)
    assert float(row['post_NLL']) < float(row['NLL'])
    # accuracy: argmax, pixel accuracy and mIoU over the classes with a non-empty union, counted here by hand
    pred = logits.argmax(1)
    assert float(row['aAcc']) == pytest.approx(100 * float((pred == labels).double().mean()), rel=1e-9)
    ious = []
    for k in range(K):
        union = int(((pred == k) | (labels == k)).sum())
        if union:
            ious.append(int(((pred == k) & (labels == k)).sum()) / union)
    assert float(row['mIoU']) == pytest.approx(100 * sum(ious) / len(ious), rel=1e-9)
    # top-label ECE with 15 equal-width bins (lower, upper], pre and post
    for prefix, scale in (('', 1.0), ('post_', t)):
        probs = torch.softmax(logits / scale, 1)
        conf, _ = probs.max(1)
        correct = (pred == labels).double()
        bins = (conf.double() * 15).ceil().long().clamp(1, 15)
        ece = sum(abs(float(correct[bins == b].sum() - conf[bins == b].double().sum())) for b in range(1, 16))
        assert float(row[f'{prefix}ECE_15']) == pytest.approx(100 * ece / labels.numel(), abs=1e-4)
    a, c = float(row['aAcc']) / 100, 1 - float(row['ECE_15']) / 100
    assert float(row['HCS']) == pytest.approx(100 * 2 * a * c / (a + c))
    assert float(row['post_Acc']) == pytest.approx(float(row['Acc']))  # TS keeps the prediction


def test_the_default_protocol_picks_t_on_the_benchmark_grid_by_ece(models, nll_run, tmp_path):
    out = tmp_path / 'grid.csv'
    spec = [s for s in _specs(models) if s.name == 'wd_tiny@iter_2']
    run_study(spec, out=str(out), protocol=StudyProtocol(), device=CPU, log_every=0, log=lambda _: None)
    (row,) = read_table(str(out))
    assert row['ts_method'] == 'grid-ece'
    fit_z, fit_y = _predictions(models, spec[0].checkpoint)['held_out']
    ref = TemperatureScaling(num_classes=K, method='grid', grid_metric='ece').fit(
        [(z[None], y[None]) for z, y in zip(fit_z, fit_y)])
    assert float(row['T']) == ref.fit_info['temperature']
    assert row['ts_passes'] == '1'
    nll_row = nll_run['rows'][1]
    for key in ('mIoU', 'aAcc', 'ECE_15', 'NLL', 'test_pixels'):  # pre-TS values do not depend on the fit
        assert row[key] == nll_row[key]


def test_broken_checkpoint_is_reported_and_the_others_proceed(models, nll_run):
    assert (nll_run['measured'], nll_run['failed']) == (2, 1)
    failures = read_table(str(models['root'] / 'study.failures.csv'))
    assert len(failures) == 1
    assert failures[0]['checkpoint'] == models['broken'] and failures[0]['stage'] == 'load-and-fit-pass'
    assert failures[0]['error']


def test_resume_skips_measured_models_and_refuses_another_protocol(models, nll_run, monkeypatch):
    import calibseg.study.runner as runner

    out = nll_run['out']
    before = out.read_bytes()
    measured = []
    original = runner.measure

    def spy(spec, *args, **kwargs):
        measured.append(spec.name)
        return original(spec, *args, **kwargs)

    monkeypatch.setattr(runner, 'measure', spy)
    log = []
    assert _run(models, out, StudyProtocol(ts_method='nll'), log) == (0, 1)
    assert measured == ['fcn_r18-d16_ce_4it_tiny-voc-32x32@broken']  # only the model that failed
    assert out.read_bytes() == before  # nothing rewritten, no row added
    assert sum(line.startswith('[study] skip wd_tiny@iter_') for line in log) == 2
    assert len(read_table(str(models['root'] / 'study.failures.csv'))) == 2
    with pytest.raises(ValueError, match='another protocol'):
        _run(models, out, StudyProtocol(ts_method='grid-ece'))


# ------------------------------------------------------------------------------------------------ pieces
def _fit_batches(seed=0, t_true=2.5, n_images=4):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_images):
        z = torch.randn(500, 4, generator=g) * 3
        y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
        batches.append((z * t_true, y))
    return batches


@pytest.mark.parametrize('ts_method', ['nll', 'grid-ece', 'grid-nll'])
def test_fit_temperature_is_temperature_scaling(ts_method):
    batches = _fit_batches()
    got = fit_temperature(batches, num_classes=4, ts_method=ts_method)
    if ts_method == 'nll':
        ref = TemperatureScaling(num_classes=4).fit(batches, ignore_index=None)
        assert got['T'] == pytest.approx(ref.fit_info['temperature'], rel=1e-12)
        assert got['T'] == pytest.approx(2.5, rel=0.1)
    else:
        ref = TemperatureScaling(num_classes=4, method='grid', grid_metric=ts_method[5:]).fit(
            batches, ignore_index=None)
        assert got['T'] == ref.fit_info['temperature']
        assert got['fit_nll_pre'] == pytest.approx(ref.fit_info['grid_nll'][9])  # T = 1.0
    z = torch.cat([b[0] for b in batches]).double()
    y = torch.cat([b[1] for b in batches])
    assert got['fit_pixels'] == 2000 and got['converged'] is True and got['T_at_bound'] is False
    assert got['fit_nll_pre'] == pytest.approx(float(F.cross_entropy(z, y)), rel=1e-6)
    assert got['fit_nll_post'] == pytest.approx(float(F.cross_entropy(z / got['T'], y)), rel=1e-5)
    assert got['fit_nll_post'] <= got['fit_nll_pre']


def test_a_fit_that_does_not_converge_is_recorded_as_such(monkeypatch):
    import calibseg.calibrators as calibrators

    class OnePass(TemperatureScaling):
        def __init__(self, **kwargs):
            super().__init__(max_iter=1, **kwargs)

    monkeypatch.setattr(calibrators, 'TemperatureScaling', OnePass)
    with pytest.warns(RuntimeWarning):
        got = fit_temperature(_fit_batches(), num_classes=4, ts_method='nll')
    assert got['converged'] is False and got['ts_passes'] == 1


def test_a_grid_fit_at_the_end_of_the_grid_is_flagged():
    got = fit_temperature(_fit_batches(t_true=0.02), num_classes=4, ts_method='grid-ece')  # far too soft
    assert got['T'] == pytest.approx(0.1) and got['T_at_bound'] is True and got['converged'] is True


def test_accuracy_is_mmseg_iou_arithmetic_against_a_confusion_matrix():
    g = torch.Generator().manual_seed(0)
    k = 6
    areas = torch.zeros(4, k, dtype=torch.float64)
    confusion = torch.zeros(k, k, dtype=torch.float64)
    for _ in range(3):
        labels = torch.randint(0, k - 1, (9, 11), generator=g)  # class 5 never labelled
        labels[torch.rand(9, 11, generator=g) < 0.2] = 255
        pred = torch.randint(0, k - 2, (9, 11), generator=g)  # classes 4 and 5 never predicted
        areas += iou_areas(pred, labels, num_classes=k, ignore_index=255)
        valid = labels != 255
        confusion += torch.bincount(labels[valid] * k + pred[valid], minlength=k * k).view(k, k).double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    assert int(present.sum()) == 5  # class 5: no label, no prediction -> left out of the mean
    got = accuracy_metrics(areas)
    assert got['mIoU'] == pytest.approx(100 * float((tp[present] / union[present]).mean()), rel=1e-12)
    assert got['aAcc'] == pytest.approx(100 * float(tp.sum() / confusion.sum()), rel=1e-12)
