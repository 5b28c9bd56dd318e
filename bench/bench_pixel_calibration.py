"""Throughput and peak memory of calibseg's per-pixel calibration statistics.

Streams synthetic 21-class logits (512x512 images) through

* ``calibseg-full``: :class:`CalibrationStatistics` with class-wise statistics, then every default key;
* ``calibseg-top``: top-label statistics only (``classwise=False``), then every top-label key;
* ``torchmetrics``: ``MulticlassCalibrationError(num_classes=21, n_bins=15)`` (``update`` + ``compute``);
* ``softmax-max``: bare ``torch.softmax`` + ``max`` over the same tensors (the floor of any method);

each in its own subprocess (peak RSS from ``resource.getrusage`` in the child), and prints Mpixel/s, peak RSS
and the ratios ``full / softmax-max`` (target >= 0.25) and ``top / torchmetrics`` (target >= 1.5).

The *user path* (issue 16) is the registered ``PixelCalibrationMetric`` inside mmengine's ``Evaluator``, fed one
512x512 ``SegDataSample`` at a time as mmseg's test loop feeds it (``evaluator-top``: ``metrics=['ECE', 'MCE']``;
``evaluator-headline``: the default keys; ``evaluator-all``: ``metrics='all'``), against a bare per-sample
softmax+max (``sample-softmax-max``, the floor) and torchmetrics' ``MulticlassCalibrationError`` updated per
sample (``sample-torchmetrics``); targets: top >= 0.75x the floor and >= 2x torchmetrics, the full grid >= 0.5x
the floor. Every method first processes one untimed warm-up sample (a batch on the core path; its time is
printed beside the row): a test loop runs hundreds of images, so a process's one-off costs are not throughput.

By default both paths run (``--path core`` or ``--path user`` for one; ``--user-path`` is ``--path user``), every
ratio against a baseline measured in the same run; ``--repeat N`` runs every method N times, interleaved, and
prints each ratio's range over the repeats (the noise)::

    python bench/bench_pixel_calibration.py                        # both paths, 2e7 pixels per method
    python bench/bench_pixel_calibration.py --path user --repeat 2
    python bench/bench_pixel_calibration.py --rss-scaling          # peak RSS at 1e7 vs 1e8 pixels

The same pool of pre-generated batches is cycled in every child, so data generation is not timed.

On a machine shared with other jobs the children's throughputs move by 30 % from run to run. ``--interleave
ROUNDS`` runs the user path's methods round-robin in one process instead (``--round-samples`` samples each per
round, the order rotating) and prints the median over rounds of each per-round ratio with its quartiles: the two
methods of a ratio then share the load of the same moment (throughput only; peak RSS needs the children)::

    python bench/bench_pixel_calibration.py --interleave 10 --threads 2

``--thread-scaling ROUNDS`` shows how much a second core speeds up each kind of work of the update on this machine
(a streaming add, ``exp``, the class-wise ``bincount``, the floor, whole chunk updates), which bounds what the
chunk workers can gain at 2 threads::

    python bench/bench_pixel_calibration.py --thread-scaling 9
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

METHODS = ('softmax-max', 'calibseg-full', 'calibseg-top', 'torchmetrics')
USER_METHODS = ('sample-softmax-max', 'evaluator-top', 'evaluator-headline', 'evaluator-all', 'sample-torchmetrics')
EVALUATOR_METRICS = {'evaluator-top': ['ECE', 'MCE'], 'evaluator-headline': None, 'evaluator-all': 'all'}
SIDE = 512
CLASSES = 21


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _make_pool(batch: int, pool: int, seed: int):
    import torch
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(pool):
        labels = torch.randint(0, CLASSES, (batch, SIDE, SIDE), generator=gen)
        logits = torch.randn(batch, CLASSES, SIDE, SIDE, generator=gen) * 2.0
        # a confident, mostly right model: +6 on the label 70% of the time, on a random class otherwise
        hot = torch.where(torch.rand(batch, SIDE, SIDE, generator=gen) < 0.7, labels,
                          torch.randint(0, CLASSES, (batch, SIDE, SIDE), generator=gen))
        logits.scatter_add_(1, hot.unsqueeze(1), torch.full((batch, 1, SIDE, SIDE), 6.0))
        labels[:, :8] = 255  # a band of ignored pixels
        out.append((logits, labels))
    return out


def child(method: str, pixels: int, batch: int, pool: int, threads: int) -> dict:
    import torch
    if threads > 0:
        torch.set_num_threads(threads)
    data = _make_pool(batch, pool, seed=0)
    per_batch = batch * SIDE * SIDE
    n_batches = max(1, -(-pixels // per_batch))
    base_rss = _rss_mib()
    if method in USER_METHODS:
        return user_path_child(method, data, n_batches * batch, base_rss)
    if method.startswith('calibseg'):
        from calibseg.functional.calibration import CalibrationStatistics, calibration_metrics
        stats = CalibrationStatistics(CLASSES, input_type='logits', classwise=method == 'calibseg-full')
        step = stats.update
    elif method == 'torchmetrics':
        from torchmetrics.classification import MulticlassCalibrationError
        metric = MulticlassCalibrationError(num_classes=CLASSES, n_bins=15, ignore_index=255)
        step = metric.update
    else:
        def step(logits, labels):
            p = torch.softmax(logits, dim=1)
            p.max(dim=1)
    start = time.perf_counter()
    step(*data[-1])  # the untimed warm-up batch (see user_path_child)
    t_first = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n_batches):
        logits, labels = data[i % len(data)]
        step(logits, labels)
    t_update = time.perf_counter() - start
    start = time.perf_counter()
    result = None
    if method.startswith('calibseg'):
        result = calibration_metrics(stats)['ECE']
    elif method == 'torchmetrics':
        result = 100.0 * float(metric.compute())
    t_compute = time.perf_counter() - start
    total = n_batches * per_batch
    return dict(method=method, pixels=total, update_s=t_update, compute_s=t_compute, first_s=t_first,
                mpix_s=total / (t_update + t_compute) / 1e6, peak_rss_mib=_rss_mib(), base_rss_mib=base_rss,
                ece=result, threads=torch.get_num_threads())


def _user_step(method: str):
    """``(step(sample), finish() -> ECE or None)`` of a user-path method (built once, outside any timing)."""
    import torch
    if method.startswith('evaluator'):
        from mmengine.evaluator import Evaluator
        from mmengine.registry import init_default_scope

        import calibseg  # noqa: F401  (registers the metric)
        init_default_scope('mmseg')  # as mmseg's Runner does
        evaluator = Evaluator([dict(type='PixelCalibrationMetric', metrics=EVALUATOR_METRICS[method])])
        evaluator.dataset_meta = dict(classes=[f'c{k}' for k in range(CLASSES)])
        count = [0]

        def step(sample):
            evaluator.process(data_samples=[sample[2]], data_batch=None)
            count[0] += 1

        return step, lambda: evaluator.evaluate(count[0]).get('ECE')
    if method == 'sample-torchmetrics':
        from torchmetrics.classification import MulticlassCalibrationError
        metric = MulticlassCalibrationError(num_classes=CLASSES, n_bins=15, ignore_index=255)

        def step(sample):
            metric.update(sample[0].unsqueeze(0), sample[1].unsqueeze(0))

        return step, lambda: 100.0 * float(metric.compute())

    def step(sample):
        torch.softmax(sample[0], dim=0).max(dim=0)

    return step, lambda: None


def _user_samples(data) -> list:
    """``(logits, labels, SegDataSample)`` of every image of the pool, built beforehand."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    out = []
    for logits, labels in data:
        for i in range(logits.shape[0]):
            sample = SegDataSample()
            sample.seg_logits = PixelData(data=logits[i])
            sample.gt_sem_seg = PixelData(data=labels[i].unsqueeze(0))
            shape = labels[i].shape
            sample.set_metainfo(dict(img_path='synthetic.png', ori_shape=shape, img_shape=shape))
            out.append((logits[i], labels[i], sample))
    return out


def user_path_child(method: str, data, n_samples: int, base_rss: float) -> dict:
    """One 512x512 sample at a time, as mmseg's test loop calls the evaluator (samples built beforehand)."""
    import torch
    samples = _user_samples(data)
    step, finish = _user_step(method)
    # one untimed warm-up sample for every method: the one-off costs of a process (the grid's lookup table, the
    # allocator's first buffers, a compiled kernel's load) are reported apart, not spread over n_samples
    start = time.perf_counter()
    step(samples[-1])
    t_first = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n_samples):
        step(samples[i % len(samples)])
    t_update = time.perf_counter() - start
    start = time.perf_counter()
    result = finish()
    t_compute = time.perf_counter() - start
    total = n_samples * SIDE * SIDE
    return dict(method=method, pixels=total, update_s=t_update, compute_s=t_compute, first_s=t_first,
                mpix_s=total / (t_update + t_compute) / 1e6, peak_rss_mib=_rss_mib(), base_rss_mib=base_rss,
                ece=result, threads=torch.get_num_threads())


def interleaved_child(methods, rounds: int, per_round: int, batch: int, pool: int, threads: int) -> dict:
    """Every user-path method in one process, round-robin: each round gives each method the same ``per_round``
    samples (the order of the methods rotating from round to round), so a ratio of two methods in one round shares
    that round's machine load (throughput only)."""
    import torch
    if threads > 0:
        torch.set_num_threads(threads)
    samples = _user_samples(_make_pool(batch, pool, seed=0))
    built = {m: _user_step(m) for m in methods}
    steps = {m: step for m, (step, _) in built.items()}
    for m in methods:  # warm-up
        steps[m](samples[-1])
    times = {m: [] for m in methods}
    for r in range(rounds):
        chosen = [samples[(r * per_round + i) % len(samples)] for i in range(per_round)]
        for m in methods[r % len(methods):] + methods[:r % len(methods)]:  # who goes first rotates
            start = time.perf_counter()
            for sample in chosen:
                steps[m](sample)
            times[m].append((time.perf_counter() - start) / per_round)
    # the final compute (torchmetrics concatenates every sample's confidences there), spread over the samples
    for m, (_, finish) in built.items():
        start = time.perf_counter()
        finish()
        share = (time.perf_counter() - start) / (rounds * per_round + 1)
        times[m] = [t + share for t in times[m]]
    return dict(times=times, threads=torch.get_num_threads())


def report_interleaved(result: dict) -> None:
    """Median ms per sample of every method (its final compute spread over the samples), then each target ratio:
    the median over rounds of the per-round throughput ratio, with its interquartile range and full range."""
    times = result['times']
    print(f"interleaved, {result['threads']} thread(s), {len(next(iter(times.values())))} rounds")
    for m, t in times.items():
        print(f'{m:20s} {1e3 * statistics.median(t):8.1f} ms per 512x512 sample (median)')
    for a, b, target in RATIOS:
        if a in times and b in times:
            values = sorted(y / x for x, y in zip(times[a], times[b]))  # throughput a / b = time b / time a
            q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
            verdict = 'ok' if statistics.median(values) >= target else 'BELOW TARGET'
            print(f'throughput {a} / {b}: {statistics.median(values):.2f}x (quartiles {q[0]:.2f}-{q[2]:.2f}, '
                  f'range {values[0]:.2f}-{values[-1]:.2f}) (target >= {target}x on the median: {verdict})')


def thread_scaling(rounds: int) -> None:
    """How much a second core speeds up each kind of work in the full grid's update, on this machine.

    Each operation runs on two independent inputs of one 131072-pixel, 21-class chunk (the statistics' chunk):
    one after the other in this thread, then at once on two single-threaded pool threads (how the statistics'
    chunk workers run); the scaling is the ratio of the two wall times (2.0: the second core doubles throughput).
    A streaming add (memory bandwidth), ``exp`` (arithmetic), the class-wise weighted ``bincount`` (scattered
    adds into a float64 histogram), a softmax+max (the floor) and the statistics' whole top-label and full-grid
    chunk updates. Medians of ``rounds`` alternating rounds."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from calibseg.functional.calibration import CalibrationStatistics
    from calibseg.functional.calibration.grid import DEFAULT_GRID

    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(2, initializer=torch.set_num_threads, initargs=(1,))
    pixels, cells = 131072, CLASSES * DEFAULT_GRID.n_cells
    gen = torch.Generator().manual_seed(0)

    def inputs() -> dict:
        logits = torch.randn(1, CLASSES, pixels, 1, generator=gen) * 3.0
        return dict(logits=logits, labels=torch.randint(0, CLASSES, (1, pixels, 1), generator=gen),
                    a=torch.rand(CLASSES * pixels, generator=gen), b=torch.rand(CLASSES * pixels, generator=gen),
                    cells=torch.randint(0, cells, (CLASSES * pixels,), generator=gen, dtype=torch.int32),
                    weights=torch.rand(CLASSES * pixels, generator=gen, dtype=torch.float64),
                    top=CalibrationStatistics(CLASSES, input_type='logits', classwise=False, num_workers=1),
                    full=CalibrationStatistics(CLASSES, input_type='logits', num_workers=1))

    work = {
        'add (memory)': lambda d: d['a'].add_(d['b']),
        'exp (arithmetic)': lambda d: torch.exp(d['b'], out=d['a']),
        'weighted bincount': lambda d: torch.bincount(d['cells'], d['weights'], minlength=cells),
        'softmax+max (floor)': lambda d: torch.softmax(d['logits'], 1).max(1),
        'top-label update': lambda d: d['top'].update(d['logits'], d['labels'], defer_checks=True),
        'full-grid update': lambda d: d['full'].update(d['logits'], d['labels'], defer_checks=True),
    }
    pair = [inputs(), inputs()]
    print(f'thread scaling: two {pixels}-pixel {CLASSES}-class chunks, serial vs two threads, median of {rounds}')
    for name, fn in work.items():
        serial, parallel = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            fn(pair[0])
            fn(pair[1])
            serial.append(time.perf_counter() - start)
            start = time.perf_counter()
            list(pool.map(fn, pair))
            parallel.append(time.perf_counter() - start)
        one, two = statistics.median(serial), statistics.median(parallel)
        print(f'{name:22s} serial {1e3 * one:7.2f} ms  two threads {1e3 * two:7.2f} ms  scaling {one / two:.2f}x')
    pool.shutdown()


def run_child(method: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), '--child', method, '--pixels', str(int(args.pixels)),
           '--batch', str(args.batch), '--pool', str(args.pool), '--threads', str(args.threads)]
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = root + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return dict(method=method, error=proc.stderr.strip().splitlines()[-1] if proc.stderr else 'failed')
    return json.loads(proc.stdout.strip().splitlines()[-1])


RATIOS = (('calibseg-full', 'softmax-max', 0.25), ('calibseg-top', 'torchmetrics', 1.5),
          ('calibseg-full', 'torchmetrics', 0.0), ('evaluator-top', 'sample-softmax-max', 0.75),
          ('evaluator-top', 'sample-torchmetrics', 2.0), ('evaluator-headline', 'sample-softmax-max', 0.0),
          ('evaluator-all', 'sample-softmax-max', 0.5))


def report(rows) -> None:
    """One table row per run, then every ratio (median over the repeats, runs of a method paired in order) with its
    range; the verdict takes the worst run."""
    print(f"{'method':20s} {'pixels':>12s} {'Mpix/s':>8s} {'update s':>9s} {'compute s':>9s} "
          f"{'peak RSS MiB':>12s} {'(data)':>8s} {'ECE %':>8s}")
    for r in rows:
        if 'error' in r:
            print(f"{r['method']:20s} error: {r['error']}")
            continue
        ece = '' if r['ece'] is None else f"{r['ece']:8.3f}"
        print(f"{r['method']:20s} {r['pixels']:12.3e} {r['mpix_s']:8.2f} {r['update_s']:9.2f} "
              f"{r['compute_s']:9.2f} {r['peak_rss_mib']:12.0f} {r['base_rss_mib']:8.0f} {ece:>8s}"
              + (f"  (warm-up, untimed: {r['first_s']:.2f} s)" if 'first_s' in r else ''))
    runs = {}
    for r in rows:
        if 'error' not in r:
            runs.setdefault(r['method'], []).append(r['mpix_s'])
    for a, b, target in RATIOS:
        if a in runs and b in runs:
            values = [x / y for x, y in zip(runs[a], runs[b])]
            verdict = 'ok' if min(values) >= target else 'BELOW TARGET'
            each = ', '.join(f'{v:.2f}' for v in values)
            spread = f' (range {min(values):.2f}-{max(values):.2f} over {len(values)} runs: {each})' \
                if len(values) > 1 else ''
            print(f'throughput {a} / {b}: {statistics.median(values):.2f}x{spread} '
                  f'(target >= {target}x: {verdict})')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--pixels', type=float, default=2e7, help='pixels streamed per method (default 2e7)')
    parser.add_argument('--batch', type=int, default=4, help='images of 512x512 per batch')
    parser.add_argument('--pool', type=int, default=2, help='pre-generated batches cycled through')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    parser.add_argument('--methods', nargs='+', default=None, choices=METHODS + USER_METHODS,
                        help='default: the methods of --path')
    parser.add_argument('--path', choices=('both', 'core', 'user'), default='both',
                        help='core: the functional statistics on batches; user: the registered metric in '
                             'mmengine\'s Evaluator, one sample at a time (issue 16); both (default)')
    parser.add_argument('--user-path', action='store_true', help='same as --path user')
    parser.add_argument('--repeat', type=int, default=1, help='runs of every method, interleaved (noise)')
    parser.add_argument('--rss-scaling', action='store_true',
                        help='compare peak RSS of calibseg and torchmetrics at two sizes (--rss-pixels)')
    parser.add_argument('--rss-pixels', type=float, nargs=2, default=(1e7, 1e8), metavar=('SMALL', 'LARGE'),
                        help='pixel counts of --rss-scaling (default 1e7 1e8)')
    parser.add_argument('--interleave', type=int, default=0, metavar='ROUNDS',
                        help='user path only: run its methods round-robin in one process for ROUNDS rounds of '
                             '--round-samples samples each and print medians (throughput; less noise)')
    parser.add_argument('--round-samples', type=int, default=4, help='samples per method per round (--interleave)')
    parser.add_argument('--thread-scaling', type=int, default=0, metavar='ROUNDS',
                        help='how a second core speeds up each kind of work of the update (memory, arithmetic, '
                             'histograms, the floor, the chunk updates), median of ROUNDS rounds')
    parser.add_argument('--child', choices=METHODS + USER_METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.thread_scaling:
        thread_scaling(args.thread_scaling)
        return
    if args.interleave:
        methods = [m for m in (args.methods or USER_METHODS) if m in USER_METHODS]
        report_interleaved(interleaved_child(methods, args.interleave, args.round_samples, args.batch, args.pool,
                                             args.threads))
        return
    if args.child:
        print(json.dumps(child(args.child, int(args.pixels), args.batch, args.pool, args.threads)))
        return
    if args.rss_scaling:
        rows = []
        for pixels in args.rss_pixels:
            args.pixels = pixels
            for method in ('calibseg-full', 'torchmetrics'):
                rows.append(run_child(method, args))
        report(rows)
        for method in ('calibseg-full', 'torchmetrics'):
            runs = [r for r in rows if r.get('method') == method and 'error' not in r]
            if len(runs) == 2:
                small, big = (r['peak_rss_mib'] - r['base_rss_mib'] for r in runs)
                lo, hi = args.rss_pixels
                print(f'{method}: peak RSS above the data {small:.0f} MiB at {lo:.0e} pixels, {big:.0f} MiB at '
                      f'{hi:.0e}')
        return
    path = 'user' if args.user_path else args.path
    methods = args.methods or (list(METHODS) * (path != 'user') + list(USER_METHODS) * (path != 'core'))
    report([run_child(method, args) for _ in range(args.repeat) for method in methods])


if __name__ == '__main__':
    main()
