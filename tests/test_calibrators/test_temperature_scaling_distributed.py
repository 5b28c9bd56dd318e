"""TemperatureScaling.fit(reduce=...) in two real gloo processes equals the one-process fit on all the data."""
import pytest
import torch
from calibseg_testing import run_gloo

from calibseg.calibrators import TemperatureScaling


def data():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(3000, 4, generator=g) * 3
    y = torch.multinomial(torch.softmax(z / 1.7, 1), 1, generator=g).squeeze(1)
    return z, y


def shards(rank):
    """Rank 0 gets two batches, rank 1 one batch and an image without labelled pixels."""
    z, y = data()
    if rank == 0:
        return [(z[:1000], y[:1000]), (z[1000:1800], y[1000:1800])]
    return [(z[1800:], y[1800:]), (z[:5], torch.full((5,), 255))]


def _worker(rank):
    from calibseg.utils.distributed import sum_across_ranks

    out = {}
    for split in ('halves', 'one-empty'):
        for method in ('nll', 'grid'):
            batches = shards(rank) if split == 'halves' else (shards(0) + shards(1) if rank == 0 else [])
            ts = TemperatureScaling(num_classes=4, method=method).fit(batches, ignore_index=255,
                                                                      reduce=sum_across_ranks)
            out[split, method] = {k: ts.fit_info[k] for k in ('temperature', 'num_pixels', 'nll', 'passes')}
    return out


def test_two_processes_fit_the_one_process_temperature():
    """Both processes with data, and one process without any (it still joins every reduction)."""
    z, y = data()
    single = {m: TemperatureScaling(num_classes=4, method=m).fit(z, y, ignore_index=255).fit_info
              for m in ('nll', 'grid')}
    results = run_gloo(_worker, timeout=180)
    for split in ('halves', 'one-empty'):
        for method in ('nll', 'grid'):
            for rank in (0, 1):
                got = results[rank][split, method]
                assert got['num_pixels'] == 3000
                assert got['temperature'] == pytest.approx(single[method]['temperature'], rel=1e-9)
                assert got['nll'] == pytest.approx(single[method]['nll'], rel=1e-9)
            assert results[0][split, method] == results[1][split, method]  # the same T on every process


def test_reduce_is_called_with_sums():
    z, y = data()
    calls = []

    def reduce(t):
        calls.append(t.clone())
        return t

    ts = TemperatureScaling(num_classes=4).fit(z, y, ignore_index=None, reduce=reduce)
    assert len(calls) == ts.fit_info['passes'] + 1  # (f, f', f'') per pass, then the pixel count
    assert calls[-1].tolist() == [3000.0] and all(c.dtype == torch.float64 for c in calls)
    with pytest.raises(ValueError, match='reduce must be a callable'):
        TemperatureScaling(num_classes=4).fit(z, y, reduce=3)
    with pytest.raises(ValueError, match='no labelled pixels on any process'):
        TemperatureScaling(num_classes=4).fit([(z[:2], torch.full((2,), 255))], reduce=lambda t: t)
