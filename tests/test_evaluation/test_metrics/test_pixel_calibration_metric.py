"""PixelCalibrationMetric / BinaryCalibrationMetric inside mmengine's metric protocol (1 and 2 processes)."""
from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from calibseg_testing import CLASSES, K, make_samples, run_metric
from mmengine.logging import MessageHub

from calibseg.engine.hooks import RELIABILITY_INFO_PREFIX
from calibseg.evaluation import BinaryCalibrationMetric, PixelCalibrationMetric
from calibseg.functional.calibration import CalibrationStatistics, calibration_metrics


def direct(samples, **kwargs):
    stats = CalibrationStatistics(K, input_type='logits', **kwargs)
    for s in samples:
        stats.update(s['seg_logits']['data'], s['gt_sem_seg']['data'][0])
    return calibration_metrics(stats)


def test_pooled_equals_the_functional_core():
    samples = make_samples(5)
    got = run_metric(PixelCalibrationMetric(), samples, batch_size=2)
    want = direct(samples)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12), key
    assert {'ECE', 'ECE_15', 'ECE_em_500', 'cwCE_5', 'MCE_200', 'dECE_15', 'smECE', 'AURC', 'Acc'} <= set(got)


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
    metric = BinaryCalibrationMetric()
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
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, world, port, n, batch_size, aggregation, queue):
    import torch.distributed as dist
    from mmengine.dataset import DefaultSampler

    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        samples = make_samples(n)
        sampler = DefaultSampler(list(range(n)), shuffle=False)  # mmengine's val sampler, with its padding
        order = [samples[i] for i in sampler]
        metric = PixelCalibrationMetric(aggregation=aggregation)
        queue.put((rank, run_metric_sized(metric, order, n, batch_size)))
    finally:
        dist.destroy_process_group()


def run_metric_sized(metric, samples, size, batch_size):
    metric.dataset_meta = dict(classes=CLASSES)
    for start in range(0, len(samples), batch_size):
        metric.process({}, samples[start:start + batch_size])
    return metric.evaluate(size)


@pytest.mark.parametrize('batch_size,aggregation', [(1, 'pooled'), (2, 'pooled'), (2, 'per_image')])
def test_two_processes_equal_one_process(batch_size, aggregation):
    n = 7  # odd: DefaultSampler pads one duplicate for 2 ranks
    single = run_metric(PixelCalibrationMetric(aggregation=aggregation), make_samples(n), batch_size)
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, n, batch_size, aggregation, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in (0, 1):
        assert results[rank].keys() == single.keys()
        for key, value in single.items():
            assert math.isclose(results[rank][key], value, rel_tol=1e-9, abs_tol=1e-12), (rank, key)
