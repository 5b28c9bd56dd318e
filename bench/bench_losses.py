"""Forward+backward time and peak memory of calibseg's losses relative to mmseg's cross-entropy, in one run.

Every loss is built from a config through ``mmseg.registry.MODELS`` (as a decode head builds it) and
called as a decode head calls it. Repeats are interleaved (one call of every loss per round), so a
change in background load hits all losses alike; the table reports the median per loss, its
ratio to ``CrossEntropyLoss(avg_non_ignore=True)``, the spread of that ratio over the rounds (min-max of the
per-round ratios, a measure of the noise), and the peak memory of one forward+backward above the inputs (CPU:
the process's peak resident set, reset through ``/proc/self/clear_refs``; CUDA: the allocator's peak) relative to
CE's. Targets (issue 16): every loss at most 1.5x CE's time (focal, FLSD and LS at most 1.3x) and at most 1.5x
CE's peak memory.

Usage::

    python bench/bench_losses.py --threads 1          # (8, 21, 512, 512), as in the issue
    python bench/bench_losses.py --batch 2 --size 256 --threads 1
    python bench/bench_losses.py --device cuda
    python bench/bench_losses.py --losses SVLSLoss NACLLoss --labels regions
"""
import argparse
import gc
import statistics
import time

import torch
from mmseg.registry import MODELS

import calibseg.models.losses  # noqa: F401  (registers the losses)

CONFIGS = {
    'CrossEntropyLoss': dict(type='CrossEntropyLoss', avg_non_ignore=True),
    'SoftmaxFocalLoss': dict(type='SoftmaxFocalLoss'),
    'AdaptiveFocalLoss': dict(type='AdaptiveFocalLoss'),
    'LabelSmoothingLoss': dict(type='LabelSmoothingLoss'),
    'MbLSLoss': dict(type='MbLSLoss'),
    'MDCALoss': dict(type='MDCALoss'),
    'ACLSLoss': dict(type='ACLSLoss'),
    'SVLSLoss': dict(type='SVLSLoss'),
    'NACLLoss': dict(type='NACLLoss'),
}
TARGET_RATIO = 1.5
# issue 16: the losses that are cross-entropy with a per-pixel factor at most 1.3x
TARGET_RATIOS = dict(SoftmaxFocalLoss=1.3, AdaptiveFocalLoss=1.3, LabelSmoothingLoss=1.3)
MEMORY_RATIO = 1.5


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--classes', type=int, default=21)
    parser.add_argument('--size', type=int, default=512, help='height and width')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds (median reported)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds first')
    parser.add_argument('--ignore-frac', type=float, default=0.05,
                        help='fraction of pixels labelled 255 (VOC boundaries are ~5%%)')
    parser.add_argument('--logit-scale', type=float, default=5.0,
                        help='std of the random logits; 5 puts some max logits above the '
                        'margin 10, so every branch of MbLS/ACLS runs')
    parser.add_argument('--labels', choices=('random', 'regions'), default='random',
                        help="'random': an independent label per pixel (the worst case for the spatial losses: their "
                        "neighbourhood scatters then hit random class planes); 'regions': piecewise-constant "
                        'maps of 16x16 px cells, closer to real label maps')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory column')
    parser.add_argument('--losses', nargs='+', default=list(CONFIGS)[1:], choices=list(CONFIGS)[1:])
    return parser.parse_args()


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_once(loss, logits, target):
    logits.grad = None
    sync(logits.device)
    start = time.perf_counter()
    loss(logits, target, weight=None, ignore_index=255).backward()
    sync(logits.device)
    return time.perf_counter() - start


def _rss_kib(field):
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def peak_memory(loss, logits, target):
    """Bytes above the inputs at the peak of one forward+backward (``.grad`` included, as for every loss)."""
    logits.grad = None
    gc.collect()
    if logits.device.type == 'cuda':
        sync(logits.device)
        torch.cuda.reset_peak_memory_stats(logits.device)
        before = torch.cuda.memory_allocated(logits.device)
        loss(logits, target, weight=None, ignore_index=255).backward()
        sync(logits.device)
        return torch.cuda.max_memory_allocated(logits.device) - before
    with open('/proc/self/clear_refs', 'w') as refs:  # resets the peak resident set (VmHWM) to the current one
        refs.write('5')
    before = _rss_kib('VmRSS')
    loss(logits, target, weight=None, ignore_index=255).backward()
    return (_rss_kib('VmHWM') - before) * 1024


def main():
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.classes, args.size, args.size)
    logits = (torch.randn(shape, generator=gen) * args.logit_scale).requires_grad_()
    if args.labels == 'random':
        target = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=gen)
    else:
        cells = torch.randint(0, args.classes, (args.batch, 1, -(-args.size // 16), -(-args.size // 16)), generator=gen)
        target = cells.repeat_interleave(16, 2).repeat_interleave(16, 3)[:, 0, :args.size, :args.size].contiguous()
    target[torch.rand(target.shape, generator=gen) < args.ignore_frac] = 255
    logits = logits.detach().to(device).requires_grad_()
    target = target.to(device)

    names = ['CrossEntropyLoss'] + args.losses
    losses = {name: MODELS.build(CONFIGS[name]).to(device) for name in names}
    times = {name: [] for name in names}
    for round_index in range(args.warmup + args.repeats):
        for name in names:
            elapsed = time_once(losses[name], logits, target)
            if round_index >= args.warmup:
                times[name].append(elapsed)

    memory = {} if args.no_memory else {name: peak_memory(losses[name], logits, target) for name in names}

    where = f'{torch.get_num_threads()} thread(s)' if device.type == 'cpu' else torch.cuda.get_device_name(device)
    print(f'logits {tuple(shape)} float32 on {device.type}, {args.labels} labels, {args.ignore_frac:.0%} ignored, '
          f'{where}, median of {args.repeats} rounds')
    base = statistics.median(times['CrossEntropyLoss'])
    print(f'{"loss":<20}{"fwd+bwd ms":>12}{"ratio to CE":>13}{"round ratios":>16}{"peak MiB":>10}{"mem/CE":>8}')
    for name in names:
        median = statistics.median(times[name])
        rounds = [t / b for t, b in zip(times[name], times['CrossEntropyLoss'])]
        target_ratio = TARGET_RATIOS.get(name, TARGET_RATIO)
        flags = [] if median / base <= target_ratio else [f'time > {target_ratio}x']
        line = f'{name:<20}{median * 1e3:>12.1f}{median / base:>13.2f}{min(rounds):>9.2f}-{max(rounds):<6.2f}'
        if memory:
            mem_ratio = memory[name] / max(memory['CrossEntropyLoss'], 1)
            line += f'{memory[name] / 2**20:>10.0f}{mem_ratio:>8.2f}'
            if mem_ratio > MEMORY_RATIO:
                flags.append(f'memory > {MEMORY_RATIO}x')
        print(line + ('  ' + ', '.join(flags) if flags else ''))


if __name__ == '__main__':
    main()
