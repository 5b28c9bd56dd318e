"""TemperatureScaling.fit(reduce=...) in two real gloo processes equals the one-process fit on all the data."""
import multiprocessing as mp
import os
import socket

import pytest
import torch

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _worker(rank, port, queue):
    import torch.distributed as dist

    from calibseg.utils.distributed import sum_across_ranks

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=2)
    try:
        out = {}
        for split in ('halves', 'one-empty'):
            for method in ('nll', 'grid'):
                batches = shards(rank) if split == 'halves' else (shards(0) + shards(1) if rank == 0 else [])
                ts = TemperatureScaling(num_classes=4, method=method).fit(batches, ignore_index=255,
                                                                          reduce=sum_across_ranks)
                out[split, method] = {k: ts.fit_info[k] for k in ('temperature', 'num_pixels', 'nll', 'passes')}
        queue.put((rank, out))
    finally:
        dist.destroy_process_group()


def test_two_processes_fit_the_one_process_temperature():
    """Both processes with data, and one process without any (it still joins every reduction)."""
    z, y = data()
    single = {m: TemperatureScaling(num_classes=4, method=m).fit(z, y, ignore_index=255).fit_info
              for m in ('nll', 'grid')}
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=180) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
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
