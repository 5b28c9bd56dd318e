"""Forward+backward time of calibseg's losses relative to mmseg's cross-entropy, in one run.

Every loss is built from a config through ``mmseg.registry.MODELS`` (as a decode head builds it) and
called as a decode head calls it. Repeats are interleaved (one call of every loss per round), so a
change in background load hits all losses alike; the table reports the median per loss and its
ratio to ``CrossEntropyLoss(avg_non_ignore=True)``.

Usage::

    python bench/bench_losses.py                      # (8, 21, 512, 512), as in the issue
    python bench/bench_losses.py --batch 2 --size 256 --threads 1
    python bench/bench_losses.py --losses SVLSLoss NACLLoss --labels regions
"""
import argparse
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
TARGET_RATIO = 2.5
# the spatial losses' issue asks for at most 1.5x (their neighbourhood counts are k*k scatters into the class planes)
TARGET_RATIOS = dict(SVLSLoss=1.5, NACLLoss=1.5)


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
    parser.add_argument('--losses', nargs='+', default=list(CONFIGS)[1:], choices=list(CONFIGS)[1:])
    return parser.parse_args()


def time_once(loss, logits, target):
    logits.grad = None
    start = time.perf_counter()
    loss(logits, target, weight=None, ignore_index=255).backward()
    return time.perf_counter() - start


def main():
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.classes, args.size, args.size)
    logits = (torch.randn(shape, generator=gen) * args.logit_scale).requires_grad_()
    if args.labels == 'random':
        target = torch.randint(0, args.classes, (args.batch, args.size, args.size), generator=gen)
    else:
        cells = torch.randint(0, args.classes, (args.batch, 1, -(-args.size // 16), -(-args.size // 16)), generator=gen)
        target = cells.repeat_interleave(16, 2).repeat_interleave(16, 3)[:, 0, :args.size, :args.size].contiguous()
    target[torch.rand(target.shape, generator=gen) < args.ignore_frac] = 255

    names = ['CrossEntropyLoss'] + args.losses
    losses = {name: MODELS.build(CONFIGS[name]) for name in names}
    times = {name: [] for name in names}
    for round_index in range(args.warmup + args.repeats):
        for name in names:
            elapsed = time_once(losses[name], logits, target)
            if round_index >= args.warmup:
                times[name].append(elapsed)

    print(f'logits {tuple(shape)} float32, {args.labels} labels, {args.ignore_frac:.0%} ignored, '
          f'{torch.get_num_threads()} thread(s), median of {args.repeats} rounds')
    base = statistics.median(times['CrossEntropyLoss'])
    print(f'{"loss":<20}{"fwd+bwd ms":>12}{"ratio to CE":>13}')
    for name in names:
        median = statistics.median(times[name])
        target_ratio = TARGET_RATIOS.get(name, TARGET_RATIO)
        flag = '' if median / base <= target_ratio else f'  > {target_ratio}x target'
        print(f'{name:<20}{median * 1e3:>12.1f}{median / base:>13.2f}{flag}')


if __name__ == '__main__':
    main()
