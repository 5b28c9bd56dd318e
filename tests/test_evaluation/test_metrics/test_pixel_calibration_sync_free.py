"""PixelCalibrationMetric.process reads nothing back to the host (issue 16).

On CPU every Tensor method and torch function that reads a value back (or, like ``nonzero``, boolean-mask
indexing and ``unique``, has a data-dependent output shape that a GPU must synchronise for) is patched to count
its calls, and ``process()`` must make none, for the default keys and for ``metrics='all'``; the histograms are
also run through the accelerators' code path (``index_add_`` instead of ``bincount``, whose CUDA kernel reads the
largest index back). With CUDA the real thing runs under ``torch.cuda.set_sync_debug_mode('error')``.

Excluded, as the module docstring of the metric says: ``boundary_width``/``distance_bands`` (label-boundary
distances with OpenCV on the CPU need the label map on the host) and ``aggregation='per_image'`` (computes every
image's metric values).
"""
import pytest
import torch
from calibseg_testing import CLASSES, K, make_samples

import calibseg.functional.calibration.statistics as statistics_module
from calibseg.evaluation import PixelCalibrationMetric
from calibseg.functional.calibration import CalibrationStatistics, calibration_metrics

METHODS = ('item', 'tolist', 'cpu', 'numpy', 'nonzero', 'unique', '__bool__', '__int__', '__float__', '__index__')
FUNCTIONS = ('nonzero', 'unique', 'masked_select', 'argwhere')


@pytest.fixture
def readbacks(monkeypatch):
    """Count the calls of every value-reading Tensor method and torch function (they still work)."""
    calls = []
    for owner, names in ((torch.Tensor, METHODS), (torch, FUNCTIONS)):
        for name in names:
            original = getattr(owner, name)

            def counted(*args, _name=name, _original=original, **kwargs):
                calls.append(_name)
                return _original(*args, **kwargs)

            monkeypatch.setattr(owner, name, counted)
    getitem = torch.Tensor.__getitem__

    def counted_getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts):
            calls.append('boolean-mask indexing')
        return getitem(self, index)

    monkeypatch.setattr(torch.Tensor, '__getitem__', counted_getitem)
    return calls


def _samples(n=3, seed=0):
    samples = make_samples(n, seed=seed, size=(9, 11))
    samples[1]['seg_logits']['data'][:, 0, :4] = -200.0  # p_y below 1e-30 somewhere: the logit NLL path
    samples[1]['seg_logits']['data'][0, 0, :4] = 200.0
    return samples


@pytest.mark.parametrize('metrics', [None, 'all', ['ECE', 'MCE']], ids=['default', 'all', 'top-label'])
@pytest.mark.parametrize('device_histograms', [False, True], ids=['cpu-histograms', 'device-histograms'])
def test_process_reads_nothing_back(monkeypatch, readbacks, metrics, device_histograms):
    samples = _samples()
    expected = PixelCalibrationMetric(metrics=metrics)
    expected.dataset_meta = dict(classes=CLASSES)
    for s in samples:
        expected.process({}, [s])
    want = expected.evaluate(len(samples))
    monkeypatch.setattr(statistics_module, '_FORCE_DEVICE_PATH', device_histograms)
    metric = PixelCalibrationMetric(metrics=metrics)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples[:1])  # warm-up: the first call builds the cell lookup table (once per process)
    readbacks.clear()
    for s in samples[1:]:
        metric.process({}, [s])
    assert readbacks == []
    got = metric.evaluate(len(samples))
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12, nan_ok=True), key
    # the counter does count (a test that cannot fail is a defect)
    readbacks.clear()
    bool(torch.tensor([1.0]) > 0)
    torch.tensor([1, 0]).nonzero()
    torch.arange(3)[torch.tensor([True, False, True])]
    assert readbacks == ['__bool__', 'nonzero', 'boolean-mask indexing']


def test_device_histograms_equal_bincount(monkeypatch):
    samples = _samples(seed=3)
    x = torch.stack([s['seg_logits']['data'] for s in samples])
    y = torch.stack([s['gt_sem_seg']['data'][0] for s in samples])
    want = CalibrationStatistics(K, input_type='logits').update(x, y).to_tensor()
    monkeypatch.setattr(statistics_module, '_FORCE_DEVICE_PATH', True)
    got = CalibrationStatistics(K, input_type='logits').update(x, y).to_tensor()
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-12)
    assert torch.equal(got[:1], want[:1])


def test_value_problems_are_raised_by_evaluate_with_the_first_sample():
    samples = _samples(4)
    samples[2]['gt_sem_seg']['data'][0, 0, :3] = torch.tensor([7, 9, 255])
    samples[3]['gt_sem_seg']['data'][0, 1, 1] = -1
    metric = PixelCalibrationMetric()
    metric.dataset_meta = dict(classes=CLASSES)
    for s in samples:
        metric.process({}, [s])  # nothing raised here: no readback per sample
    with pytest.raises(ValueError, match=r'labels of 3 evaluated pixel\(s\) are outside \[0, 5\) and not '
                                         r'ignore_index=255 \(values as low as -1 and as high as 9\).*'
                                         r'first in sample 2: img_2\.jpg'):
        metric.evaluate(4)
    # the metric is reusable after the error, and NaN scores are reported the same way
    samples = _samples(3)
    samples[1]['seg_logits']['data'][2, 3, 4] = float('nan')
    for s in samples:
        metric.process({}, [s])
    with pytest.raises(ValueError, match=r'inputs \(logits\) of 1 evaluated pixel\(s\) contain NaN or inf.*img_1\.jpg'):
        metric.evaluate(3)
    for s in _samples(3):
        metric.process({}, [s])
    assert metric.evaluate(3)['Acc'] > 0


def test_garbage_under_ignored_pixels_is_never_counted():
    samples = _samples(2)
    clean = PixelCalibrationMetric(metrics='all')
    clean.dataset_meta = dict(classes=CLASSES)
    for s in samples:
        clean.process({}, [s])
    want = clean.evaluate(2)
    for s in samples:
        ignored = s['gt_sem_seg']['data'][0] == 255
        s['seg_logits']['data'][:, ignored] = float('nan')
        s['seg_logits']['data'][0, ignored] = float('inf')
    dirty = PixelCalibrationMetric(metrics='all')
    dirty.dataset_meta = dict(classes=CLASSES)
    for s in samples:
        dirty.process({}, [s])
    got = dirty.evaluate(2)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-12, nan_ok=True), key


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('metrics', [None, 'all'], ids=['default', 'all'])
def test_no_synchronisation_on_cuda(metrics):
    samples = _samples()
    for s in samples:
        s['seg_logits']['data'] = s['seg_logits']['data'].cuda()
        s['gt_sem_seg']['data'] = s['gt_sem_seg']['data'].cuda()
    metric = PixelCalibrationMetric(metrics=metrics)
    metric.dataset_meta = dict(classes=CLASSES)
    metric.process({}, samples[:1])  # warm-up: lookup table and lazy CUDA initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        for s in samples[1:]:
            metric.process({}, [s])
    finally:
        torch.cuda.set_sync_debug_mode('default')
    got = metric.evaluate(len(samples))
    stats = CalibrationStatistics(K, input_type='logits')
    for s in samples:
        stats.update(s['seg_logits']['data'].cpu(), s['gt_sem_seg']['data'][0].cpu())
    want = calibration_metrics(stats)
    assert got['ECE'] == pytest.approx(want['ECE'], rel=1e-9)
