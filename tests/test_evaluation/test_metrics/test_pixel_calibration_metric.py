"""PixelCalibrationMetric / BinaryCalibrationMetric inside mmengine's metric protocol (1 and 2 processes)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from calibseg_testing import CLASSES, K, make_samples, run_gloo, run_metric
from mmengine.logging import MessageHub
from naive_reference import band_reference, ece15, naive_distance, top_label

import calibseg.evaluation.metrics.pixel_calibration_metric as metric_module
from calibseg.evaluation import BinaryCalibrationMetric, PixelCalibrationMetric
from calibseg.evaluation.message_keys import RELIABILITY_INFO_PREFIX
from calibseg.functional.calibration import CalibrationStatistics, calibration_metrics

HEADLINE = ['ECE', 'ECE_em_15', 'cwCE_15', 'MCE_15', 'OE_15', 'UE_15', 'smECE', 'NLL', 'Brier', 'AUROC', 'FPR95',
            'Acc']


def direct(samples, **kwargs):
    stats = CalibrationStatistics(K, input_type='logits', **kwargs)
    for s in samples:
        stats.update(s['seg_logits']['data'], s['gt_sem_seg']['data'][0])
    return calibration_metrics(stats)


def test_all_equals_the_functional_core():
    samples = make_samples(5)
    got = run_metric(PixelCalibrationMetric(metrics='all'), samples, batch_size=2)
    want = direct(samples)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12, nan_ok=True), key
    assert {'ECE', 'ECE_15', 'ECE_em_500', 'cwCE_5', 'MCE_200', 'dECE_15', 'smECE', 'AURC', 'FPR95', 'AUPR_err',
            'Acc'} <= set(got)
    assert len(got) > 50


def test_default_reports_the_headline_keys_only():
    samples = make_samples(4)
    got = run_metric(PixelCalibrationMetric(), samples, batch_size=2)
    assert list(got) == HEADLINE and len(got) <= 15
    full = direct(samples)
    for key in HEADLINE:
        assert got[key] == pytest.approx(full[key], rel=1e-12, abs=1e-12), key
    got = run_metric(PixelCalibrationMetric(aggregation='per_image'), samples)
    assert list(got) == HEADLINE
    with pytest.raises(ValueError, match="'all'"):
        PixelCalibrationMetric(metrics='everything')


def test_binary_default_reports_the_ten_bin_headline_keys():
    g = torch.Generator().manual_seed(4)
    samples = [dict(seg_logits=dict(data=torch.rand(1, 6, 6, generator=g)),
                    gt_sem_seg=dict(data=torch.randint(0, 2, (1, 6, 6), generator=g))) for _ in range(3)]
    got = run_metric(BinaryCalibrationMetric(), samples)
    assert list(got) == ['ECE', 'ECE_em_10', 'cwCE_10', 'MCE_10', 'OE_10', 'UE_10', 'smECE', 'NLL', 'Brier',
                         'AUROC', 'FPR95', 'Acc']
    full = run_metric(BinaryCalibrationMetric(metrics='all'), samples)
    assert full['ECE'] == full['ECE_10'] == got['ECE'] and len(full) > 50


def test_metric_families_restrict_the_keys():
    got = run_metric(PixelCalibrationMetric(metrics=['ECE', 'MCE'], bins=(10, 15)), make_samples(2))
    assert set(got) == {'ECE', 'ECE_10', 'ECE_15', 'MCE_10', 'MCE_15'}


def test_exclude_background_drops_label_zero():
    samples = make_samples(3)
    got = run_metric(PixelCalibrationMetric(exclude_background=True), samples)
    assert got['ECE'] == pytest.approx(direct(samples, exclude_background=True)['ECE'], rel=1e-12)
    assert got['ECE'] != pytest.approx(direct(samples)['ECE'], rel=1e-6)


def test_per_image_is_the_mean_of_per_image_values_and_skips_empty_images():
    samples = make_samples(4)
    samples[2]['gt_sem_seg']['data'][:] = 255  # an image without valid pixels contributes nothing
    got = run_metric(PixelCalibrationMetric(aggregation='per_image'), samples)
    per_image = [direct([s]) for i, s in enumerate(samples) if i != 2]
    for key in ('ECE', 'ECE_em_15', 'cwCE_15', 'NLL', 'smECE', 'AUROC'):
        assert got[key] == pytest.approx(sum(v[key] for v in per_image) / 3, rel=1e-10), key


def test_prefix_and_publication_for_the_hook():
    MessageHub.get_current_instance().runtime_info.clear()
    got = run_metric(PixelCalibrationMetric(prefix='calib', reliability_bins=10), make_samples(2))
    assert 'calib/ECE' in got
    record = MessageHub.get_current_instance().get_info(RELIABILITY_INFO_PREFIX + 'PixelCalibrationMetric_calib')
    assert record['bins'] == 10 and len(record['top_label']['count']) == 10
    assert sum(record['top_label']['count']) == record['num_pixels']
    assert set(record['classwise']) == set(CLASSES)
    assert record['scalars']['ECE'] == pytest.approx(got['calib/ECE'])


def test_padding_duplicate_is_dropped_in_a_single_process():
    """mmengine passes the dataset size: a trailing extra sample (sampler padding) must not count."""
    samples = make_samples(3)
    metric = PixelCalibrationMetric()
    metric.dataset_meta = dict(classes=CLASSES)
    for s in samples + samples[:1]:
        metric.process({}, [s])
    got = metric.evaluate(3)
    assert got['ECE'] == pytest.approx(direct(samples)['ECE'], rel=1e-12)


def test_bad_inputs():
    with pytest.raises(ValueError, match='unknown metric families'):
        PixelCalibrationMetric(metrics=['ECE', 'ECEE'])
    with pytest.raises(ValueError, match='aggregation'):
        PixelCalibrationMetric(aggregation='batch')
    with pytest.raises(ValueError, match='bins'):
        PixelCalibrationMetric(bins=(7,))
    with pytest.raises(TypeError):
        PixelCalibrationMetric(ignore_idx=0)
    samples = make_samples(2)
    samples[1]['seg_logits']['data'][0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match='img_1.jpg'):
        run_metric(PixelCalibrationMetric(), samples)
    samples = make_samples(2)
    samples[0]['gt_sem_seg']['data'][0, 0, 0] = 7
    with pytest.raises(ValueError, match='7'):
        run_metric(PixelCalibrationMetric(), samples)
    samples = make_samples(2)
    samples[0]['gt_sem_seg']['data'] = samples[0]['gt_sem_seg']['data'][:, :3]
    with pytest.raises(ValueError, match='shape'):
        run_metric(PixelCalibrationMetric(), samples)
    samples = make_samples(2)
    for s in samples:
        s['gt_sem_seg']['data'][:] = 255
    with pytest.raises(ValueError, match='no valid pixel'):
        run_metric(PixelCalibrationMetric(), samples)


def test_binary_metric_reads_probabilities_and_uses_ten_bins():
    g = torch.Generator().manual_seed(1)
    samples = []
    for i in range(3):
        p = torch.rand(1, 8, 8, generator=g)
        y = (torch.rand(8, 8, generator=g) < p[0]).long()
        samples.append(dict(seg_logits=dict(data=p), gt_sem_seg=dict(data=y[None]), img_path=f'm{i}.png'))
    metric = BinaryCalibrationMetric(metrics='all')
    metric.dataset_meta = dict(classes=('background', 'foreground'))
    for s in samples:
        metric.process({}, [s])
    got = metric.evaluate(3)
    # naive reference: confidence max(p, 1-p), prediction p >= 0.5, 10 equal-width bins (lower, upper]
    p = torch.cat([s['seg_logits']['data'].flatten() for s in samples]).double()
    y = torch.cat([s['gt_sem_seg']['data'].flatten() for s in samples]).double()
    conf = torch.maximum(p, 1 - p)
    correct = ((p >= 0.5).double() == y).double()
    bins = (torch.ceil(conf * 10) - 1).clamp(min=0).long()
    ece = sum(abs(correct[bins == b].sum() - conf[bins == b].sum()) for b in range(10)) / len(p)
    assert got['ECE'] == pytest.approx(100 * float(ece), rel=1e-9)
    assert got['ECE'] == got['ECE_10'] and 'OE_10' in got and 'UE_10' in got
    with pytest.raises(ValueError, match='one-channel'):
        bad = dict(seg_logits=dict(data=torch.rand(2, 4, 4)), gt_sem_seg=dict(data=torch.zeros(1, 4, 4).long()))
        metric.process({}, [bad])


# ------------------------------------------------------------------ two processes (gloo)
def _worker(rank, n, batch_size, aggregation, options=None, blocky=False):
    from mmengine.dataset import DefaultSampler

    samples = blocky_samples(n) if blocky else make_samples(n)
    sampler = DefaultSampler(list(range(n)), shuffle=False)  # mmengine's val sampler, with its padding
    order = [samples[i] for i in sampler]
    metric = PixelCalibrationMetric(aggregation=aggregation, **(options or {}))
    return run_metric_sized(metric, order, n, batch_size)


def run_metric_sized(metric, samples, size, batch_size):
    metric.dataset_meta = dict(classes=CLASSES)
    for start in range(0, len(samples), batch_size):
        metric.process({}, samples[start:start + batch_size])
    return metric.evaluate(size)


SPATIAL = dict(metrics='all', boundary_width=1, distance_bands=(0, 1, 2, 4))


@pytest.mark.parametrize('batch_size,aggregation,options', [(1, 'pooled', None), (2, 'pooled', SPATIAL),
                                                            (2, 'per_image', None)])
def test_two_processes_equal_one_process(batch_size, aggregation, options):
    n = 7  # odd: DefaultSampler pads one duplicate for 2 ranks
    blocky = options is not None
    MessageHub.get_current_instance().runtime_info.clear()
    single = run_metric(PixelCalibrationMetric(aggregation=aggregation, **(options or {})),
                        blocky_samples(n) if blocky else make_samples(n), batch_size)
    results = run_gloo(_worker, n, batch_size, aggregation, options, blocky)
    for rank in (0, 1):
        assert results[rank].keys() == single.keys()
        for key, value in single.items():
            assert math.isclose(results[rank][key], value, rel_tol=1e-9, abs_tol=1e-12) or (
                math.isnan(value) and math.isnan(results[rank][key])), (rank, key)
    if blocky:
        assert {'boundary_ECE_15', 'interior_Acc', 'FPR95', 'AUPR_err'} <= set(single)


# ------------------------------------------------------------------ spatial keys (issue 12) and 0/255 masks (issue 17)
def blocky_samples(n, *, seed=0, size=(10, 12), k=K):
    """Samples with regions of one label (3x3 blocks), ignored pixels, an ignored region, a map without
    boundaries and an entirely ignored map."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        labels = torch.randint(0, k, (4, 4), generator=g).repeat_interleave(3, 0).repeat_interleave(3, 1)
        labels = labels[:size[0], :size[1]].contiguous()
        labels[torch.rand(size, generator=g) < 0.05] = 255
        if i % 4 == 1:
            labels[:] = 2  # no boundary pixel
        elif i % 4 == 2:
            labels[:4, :6] = 255  # ignored region
        elif i == 3:
            labels[:] = 255  # entirely ignored
        logits = torch.randn(k, *size, generator=g) * 3
        samples.append(dict(seg_logits=dict(data=logits), gt_sem_seg=dict(data=labels[None]),
                            img_path=f'blocky_{i}.png'))
    return samples


def _pairs(samples):
    return [(s['seg_logits']['data'], s['gt_sem_seg']['data'][0]) for s in samples]


@pytest.mark.parametrize('width', [0, 1, 2.5])
def test_boundary_keys_match_the_naive_reference(width):
    samples = blocky_samples(6)
    got = run_metric(PixelCalibrationMetric(boundary_width=width), samples, batch_size=2)
    assert list(got) == HEADLINE + ['boundary_ECE_15', 'boundary_Acc', 'boundary_frac', 'interior_ECE_15',
                                    'interior_Acc']
    conf, cor, dist = [], [], []
    for x, y in _pairs(samples):
        c, a = top_label(x, y)
        valid = y.numpy() != 255
        conf.append(c[valid])
        cor.append(a[valid])
        dist.append(naive_distance(y.numpy())[valid])
    conf, cor, dist = (np.concatenate(v) for v in (conf, cor, dist))
    near = dist <= width
    assert got['boundary_ECE_15'] == pytest.approx(ece15(conf[near], cor[near]), rel=1e-7)
    assert got['interior_ECE_15'] == pytest.approx(ece15(conf[~near], cor[~near]), rel=1e-7)
    assert got['boundary_Acc'] == pytest.approx(100 * cor[near].mean(), rel=1e-12)
    assert got['interior_Acc'] == pytest.approx(100 * cor[~near].mean(), rel=1e-12)
    assert got['boundary_frac'] == pytest.approx(100 * near.mean(), rel=1e-12)
    assert 0 < got['boundary_frac'] < 100


def test_one_sided_evaluations_give_nan_with_a_warning(monkeypatch):
    logged = []
    monkeypatch.setattr(metric_module, 'print_log', lambda msg, **kw: logged.append((msg, kw.get('level'))))
    flat = [s for i, s in enumerate(blocky_samples(4)) if i == 1]  # one map without boundaries
    got = run_metric(PixelCalibrationMetric(boundary_width=2), flat)
    assert math.isnan(got['boundary_ECE_15']) and math.isnan(got['boundary_Acc']) and got['boundary_frac'] == 0
    assert got['interior_ECE_15'] == pytest.approx(got['ECE'], rel=1e-12)
    assert any('boundary_ECE_15 and boundary_Acc are NaN' in m and 'no evaluated pixel' in m and lvl == 30
               for m, lvl in logged)
    logged.clear()
    stripes = dict(seg_logits=dict(data=torch.randn(K, 4, 4)),
                   gt_sem_seg=dict(data=torch.tensor([[0, 1, 0, 1]] * 4)[None]))
    got = run_metric(PixelCalibrationMetric(boundary_width=0), [stripes])
    assert math.isnan(got['interior_ECE_15']) and got['boundary_frac'] == 100
    assert any('interior_ECE_15 and interior_Acc are NaN' in m and 'every evaluated pixel' in m for m, _ in logged)


def test_distance_bands_are_published_and_match_the_reference():
    hub = MessageHub.get_current_instance()
    hub.runtime_info.clear()
    samples = blocky_samples(5)
    got = run_metric(PixelCalibrationMetric(distance_bands=(0, 1, 3)), samples)
    assert list(got) == HEADLINE  # bands go to the record, not to the scalar keys
    record = hub.get_info(RELIABILITY_INFO_PREFIX + 'PixelCalibrationMetric')
    bands = record['distance_bands']
    want = band_reference(_pairs(samples), (0, 1, 3))
    assert bands['count'] == [w['count'] for w in want] and sum(bands['count']) == record['num_pixels']
    assert bands['lower'] == [None, 0, 1, 3] and bands['upper'] == [0, 1, 3, None]
    for key in ('ECE', 'accuracy', 'confidence'):
        assert bands[key] == pytest.approx([w[key] for w in want], rel=1e-7), key


def test_binary_metric_with_boundary_width():
    g = torch.Generator().manual_seed(2)
    samples = []
    for _ in range(3):
        y = torch.zeros(8, 8, dtype=torch.long)
        y[2:6, 3:7] = 1
        y[0, :] = 255
        samples.append(dict(seg_logits=dict(data=torch.rand(1, 8, 8, generator=g)), gt_sem_seg=dict(data=y[None])))
    got = run_metric(BinaryCalibrationMetric(boundary_width=1), samples)
    conf, cor, dist = [], [], []
    for s in samples:
        y = s['gt_sem_seg']['data'][0]
        c, a = top_label(s['seg_logits']['data'][0], y, binary=True, input_type='probs')
        valid = y.numpy() != 255
        conf.append(c[valid])
        cor.append(a[valid])
        dist.append(naive_distance(y.numpy())[valid])
    conf, cor, dist = (np.concatenate(v) for v in (conf, cor, dist))
    near = dist <= 1
    assert got['boundary_ECE_15'] == pytest.approx(ece15(conf[near], cor[near]), rel=1e-7)
    assert got['interior_Acc'] == pytest.approx(100 * cor[~near].mean(), rel=1e-12)


def test_spatial_options_are_validated():
    for bad in (-1, float('nan'), 'two', True):
        with pytest.raises(ValueError, match='boundary_width'):
            PixelCalibrationMetric(boundary_width=bad)
    for bad in ((2, 1), (), (0, float('inf')), 'ab'):
        with pytest.raises(ValueError, match='distance_bands'):
            PixelCalibrationMetric(distance_bands=bad)
    with pytest.raises(ValueError, match='pooled'):
        PixelCalibrationMetric(boundary_width=2, aggregation='per_image')


def test_binary_metric_refuses_unconverted_masks():
    mask = torch.zeros(1, 6, 6, dtype=torch.long)
    mask[0, 2:4, 2:5] = 255  # a 0/255 PNG read as is: the foreground would be ignored
    sample = dict(seg_logits=dict(data=torch.rand(1, 6, 6)), gt_sem_seg=dict(data=mask), img_path='m0.png')
    with pytest.raises(ValueError, match=r'm0\.png.*0/255.*LoadBinaryAnnotations'):
        run_metric(BinaryCalibrationMetric(), [sample])
    # a converted map with ignored pixels and foreground passes; the opt-out accepts the 0/255 map
    converted = dict(seg_logits=dict(data=torch.rand(1, 6, 6)), gt_sem_seg=dict(data=(mask == 255).long()))
    converted['gt_sem_seg']['data'][0, 0, 0] = 255
    assert run_metric(BinaryCalibrationMetric(), [converted])['Acc'] >= 0
    got = run_metric(BinaryCalibrationMetric(allow_unconverted_masks=True), [sample])
    assert got['Acc'] >= 0
