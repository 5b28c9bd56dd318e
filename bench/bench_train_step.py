"""Training-step time of the issue-6 methods (RankMixup MRL / M-NDCG, gamma-Net) relative to the CE step of the
same model, in one run.

Every method trains its own demo config (FCN ResNetV1c-18 OS16 on the embedded demo data) through mmengine's
Runner, so whatever the method does per step (a second forward, a meta look-ahead, its own hooks or wrappers)
is timed; the clock wraps ``model.train_step`` only (no data loading, logging or checkpointing; validation and
checkpoints are switched off). The runners are interleaved step by step (one step of every method in turn, only
one running at a time, see :func:`run_interleaved`), so a change of background load hits all methods alike. The
table gives the median step time per method after ``--warmup`` untimed steps, its ratio to CE's median, and the
range of the ratios of same-numbered steps.

Usage::

    python bench/bench_train_step.py                               # batch 8, 96 px (the demo's own size)
    python bench/bench_train_step.py --batch 4 --size 256          # bigger inputs (images resized)
    python bench/bench_train_step.py --methods MRL --steps 2 --warmup 1   # a quick check
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import statistics
import sys
import tempfile
import threading
import time
from typing import Dict, List

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from mmengine.runner import Runner  # noqa: E402

from calibseg.utils.run_setup import iter_dataset_cfgs, load_run_config  # noqa: E402

# Method name -> demo config (relative to the repository root). Add a method here; a config that does not exist
# (yet) is skipped with a note, so the gamma-Net entry is measured as soon as its config lands.
METHOD_CONFIGS: Dict[str, str] = {
    'CE': 'configs/baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py',
    'MRL': 'configs/rankmixup/fcn_r18-d16_rankmixup-mrl_1xb8-600it_demo-voc12aug-96x96.py',
    'M-NDCG': 'configs/rankmixup/fcn_r18-d16_rankmixup-mndcg_1xb8-600it_demo-voc12aug-96x96.py',
    'gamma-Net': 'configs/gamma_net/fcn_r18-d16_gamma-net_1xb8-600it_demo-voc12aug-96x96.py',
}
# Targets of issue 6 (step time / CE step time).
TARGETS: Dict[str, float] = {'MRL': 2.3, 'M-NDCG': 4.5, 'gamma-Net': 3.0}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--methods', nargs='+', default=[m for m in METHOD_CONFIGS if m != 'CE'],
                        choices=[m for m in METHOD_CONFIGS if m != 'CE'], help='methods besides CE')
    parser.add_argument('--batch', type=int, default=8, help='images per step')
    parser.add_argument('--size', type=int, default=96,
                        help='height and width of the training images (the demo images are 96 px; other sizes '
                             'resize them)')
    parser.add_argument('--steps', type=int, default=10, help='timed steps per method')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per method, first')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--data-root', default=None,
                        help='a VOCdevkit/VOC2012 folder to read instead of the configs\' data/demo one')
    return parser.parse_args()


def _absolute_data(cfg, data_root) -> None:
    for _, ds in iter_dataset_cfgs(cfg):
        root = data_root or ds.get('data_root')
        if root and not osp.isabs(root):
            root = osp.join(ROOT, root)
        ds['data_root'] = root


def _resize_pipelines(cfg, size: int) -> None:
    """Insert a Resize to ``size`` x ``size`` after LoadAnnotations in every training pipeline."""
    for key, ds in iter_dataset_cfgs(cfg):
        if not key.startswith('train_dataloader'):
            continue
        pipeline = list(ds['pipeline'])
        index = next(i for i, t in enumerate(pipeline) if t['type'] == 'LoadAnnotations') + 1
        pipeline.insert(index, dict(type='Resize', scale=(size, size), keep_ratio=False))
        ds['pipeline'] = pipeline


def build_runner(config: str, args: argparse.Namespace, work_dir: str, name: str) -> Runner:
    steps = args.warmup + args.steps
    options = {
        'train_dataloader.batch_size': args.batch,
        'model.data_preprocessor.size': (args.size, args.size),
        'train_cfg.max_iters': steps,
        'train_cfg.val_interval': steps + 1,
        'param_scheduler.0.end': steps,
        'default_hooks.logger.interval': 10 ** 6,
        'log_level': 'WARNING',
    }
    cfg = load_run_config(osp.join(ROOT, config), work_dir=work_dir, cfg_options=options)
    _absolute_data(cfg, args.data_root)
    if args.size != 96:
        _resize_pipelines(cfg, args.size)
    # no validation, no checkpoints, no diagrams: only training steps
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.default_hooks.checkpoint = None
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] != 'ReliabilityDiagramHook']
    cfg.experiment_name = name
    return Runner.from_cfg(cfg)


class Turnstile:
    """Lets one runner thread run at a time, in a fixed order, handing over after every training step."""

    def __init__(self, names: List[str]) -> None:
        self.order = list(names)
        self.active = set(names)
        self.turn = 0
        self.cond = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.order[self.turn] == name)

    def hand_over(self, name: str) -> None:
        with self.cond:
            self._advance()
            self.cond.notify_all()
        self.wait(name)

    def retire(self, name: str) -> None:
        with self.cond:
            self.active.discard(name)
            if self.order[self.turn] == name:
                self._advance()
            self.cond.notify_all()

    def _advance(self) -> None:
        for k in range(1, len(self.order) + 1):
            candidate = (self.turn + k) % len(self.order)
            if self.order[candidate] in self.active:
                self.turn = candidate
                return


def run_interleaved(runners: Dict[str, Runner]) -> Dict[str, List[float]]:
    """Train every runner to its end, one step of each in turn; return the time of every ``train_step`` call.

    Each runner trains in its own thread through its own ``Runner.train()`` (so its hooks, loops and wrappers
    all run), but a :class:`Turnstile` lets only one thread run at a time: a thread holds the turn from its
    start (data loading, hooks) through its next ``train_step`` and hands it over right after it. The clock
    covers ``train_step`` alone, while nothing else runs.
    """
    names = list(runners)
    turnstile = Turnstile(names)
    times: Dict[str, List[float]] = {name: [] for name in names}
    errors: Dict[str, BaseException] = {}
    cuda = torch.cuda.is_available()

    def worker(name: str) -> None:
        model = runners[name].model
        inner = model.train_step

        def timed(*args, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            if cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
            turnstile.hand_over(name)
            return out

        model.train_step = timed
        try:
            turnstile.wait(name)
            runners[name].train()
        except BaseException as err:  # reported by the main thread
            errors[name] = err
        finally:
            del model.train_step
            turnstile.retire(name)

    threads = [threading.Thread(target=worker, args=(name,), name=f'bench-{name}') for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, err in errors.items():
        raise RuntimeError(f'{name} failed while training') from err
    return times


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    methods = ['CE']
    for method in args.methods:
        if osp.isfile(osp.join(ROOT, METHOD_CONFIGS[method])):
            methods.append(method)
        else:
            print(f'skipping {method}: {METHOD_CONFIGS[method]} does not exist')
    with tempfile.TemporaryDirectory() as tmp:
        runners = {m: build_runner(METHOD_CONFIGS[m], args, osp.join(tmp, m), f'bench_{m}') for m in methods}
        times = {m: t[args.warmup:] for m, t in run_interleaved(runners).items()}

    base = statistics.median(times['CE'])
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f'CPU, {torch.get_num_threads()} thread(s)'
    print(f'\ntrain_step of the demo FCN-R18, batch {args.batch}, {args.size}x{args.size} px, {device}; '
          f'median of {args.steps} steps per method after {args.warmup} warm-up steps, interleaved step by step; '
          f'1-min load average at the end: {load:.2f}')
    print(f'{"method":<12}{"step ms":>10}{"ratio to CE":>13}{"per-step ratios":>20}{"target":>10}')
    for method in methods:
        median = statistics.median(times[method])
        ratios = sorted(m / c for m, c in zip(times[method], times['CE']))
        spread = f'{ratios[0]:.2f}-{ratios[-1]:.2f}'
        target = TARGETS.get(method)
        flag = '' if target is None else (f'<= {target}' if median / base <= target else f'> {target} !')
        print(f'{method:<12}{median * 1e3:>10.1f}{median / base:>13.2f}{spread:>20}{flag:>10}')


if __name__ == '__main__':
    main()
