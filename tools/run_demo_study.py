"""The demo calibration study: train extra small models, measure every model pre/post TS, analyse the table.

    python tools/run_demo_study.py [--data-root data/demo] [--work-dir work_dirs/study] [--out-dir docs/study]

1. Trains the extra runs of :data:`EXTRA_RUNS` on the embedded demo data (losses, decode-head widths and training
   lengths differ; each run keeps its half-way and final checkpoints) into ``--work-dir/<name>``, skipping runs
   whose final checkpoint exists. Together with the 7 losses x 2 checkpoints that ``tools/compare_methods.py``
   leaves in ``work_dirs/compare`` (``--compare-dirs``) and any ``--work-dirs`` / ``--models`` given, the study
   has 26 models or more (Kendall tau over fewer than ~20 models is noise).
2. Runs ``tools/calibration_study.py`` over all of them (every checkpoint a model) into ``<out-dir>/study.csv``
   (resumable: models already in the table are not measured again).
3. Runs ``tools/analyze_study.py`` into ``<out-dir>`` (figures, tau matrices, ``summary.md`` with the commands to
   reproduce at its top).

A quick end-to-end check with tiny budgets: ``--max-iters 4 --out-dir /tmp/study --work-dir /tmp/study/runs``.
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import shlex
import socket
import subprocess
import sys
import time
from typing import List, Optional, Sequence, Tuple

from calibseg.apis.experiment import REPO_ROOT, demo_data_options, train

DEMO = 'fcn_r18-d16_{}_1xb8-600it_demo-voc12aug-96x96.py'
#: (run name, config, decode-head channels, training iterations); the compare runs have 128 channels, 600 its
EXTRA_RUNS: Tuple[Tuple[str, str, int, int], ...] = (
    ('ce-c32-200it', 'configs/baseline/' + DEMO.format('ce'), 32, 200),
    ('ce-c256-300it', 'configs/baseline/' + DEMO.format('ce'), 256, 300),
    ('focal-c64-100it', 'configs/focal/' + DEMO.format('focal'), 64, 100),
    ('ls-c64-300it', 'configs/label_smoothing/' + DEMO.format('ls'), 64, 300),
    ('mdca-c32-100it', 'configs/mdca/' + DEMO.format('mdca'), 32, 100),
    ('mbls-c256-200it', 'configs/mbls/' + DEMO.format('mbls'), 256, 200),
)
MIN_MODELS = 20


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--work-dir', default='work_dirs/study', help='where the extra runs are trained')
    parser.add_argument('--compare-dirs', nargs='*', default=['work_dirs/compare/*'],
                        help='globs of existing work dirs to include (tools/compare_methods.py output)')
    parser.add_argument('--work-dirs', nargs='*', default=[], help='more work-dir globs to include')
    parser.add_argument('--models', nargs='*', default=[], metavar='CONFIG.py:CHECKPOINT', help='more models')
    parser.add_argument('--out-dir', default='docs/study', help='study.csv, figures and summary.md')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='train every extra run for this many iterations instead (quick checks)')
    parser.add_argument('--train-options', nargs='*', default=[], help='extra --cfg-options for the trainings')
    parser.add_argument('--skip-train', action='store_true', help='measure and analyse what exists')
    parser.add_argument('--nproc', type=int, default=1, help='processes of the study (torchrun when > 1)')
    parser.add_argument('--study-args', default='', help='more arguments for calibration_study.py (one string)')
    return parser.parse_args(argv)


def shown(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (no machine paths in the docs)."""
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def command_line(cmd: Sequence[str]) -> str:
    parts = ['python' if c == sys.executable else shown(c) if osp.isabs(c) else c for c in cmd]
    return ' '.join(shlex.quote(p) for p in parts)


def finished(work_dir: str, iters: int) -> bool:
    return osp.isfile(osp.join(work_dir, f'iter_{iters}.pth'))


def train_extra_runs(args: argparse.Namespace) -> List[str]:
    """Train the missing extra runs; returns their work dirs."""
    dirs = []
    for name, config, channels, iters in EXTRA_RUNS:
        iters = args.max_iters or iters
        work_dir = osp.join(args.work_dir, name)
        dirs.append(work_dir)
        if args.skip_train or finished(work_dir, iters):
            print(f'[demo-study] {name}: {"skipped" if args.skip_train else "finished earlier"}', flush=True)
            continue
        options = demo_data_options(args.data_root, iters) + [
            f'default_hooks.checkpoint.interval={max(1, iters // 2)}',
            f'model.decode_head.channels={channels}', *args.train_options]
        start = time.time()
        train(osp.join(REPO_ROOT, config), work_dir, options)
        print(f'[demo-study] {name}: trained {iters} iterations in {time.time() - start:.0f} s', flush=True)
    return dirs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not osp.isdir(osp.join(args.data_root, 'VOCdevkit')):
        raise FileNotFoundError(f'no demo data in {args.data_root}: run '
                                '`python tools/dataset_converters/generate_demo_data.py --out data/demo`')
    start = time.time()
    train_extra_runs(args)
    os.makedirs(args.out_dir, exist_ok=True)
    table = osp.join(args.out_dir, 'study.csv')
    globs = [*args.compare_dirs, osp.join(args.work_dir, '*'), *args.work_dirs]
    found = [d for g in globs for d in glob.glob(g) if osp.isdir(d)]
    print(f'[demo-study] {len(found)} work dirs to measure', flush=True)
    voc = osp.join(args.data_root, 'VOCdevkit', 'VOC2012')
    study = [osp.join(REPO_ROOT, 'tools', 'calibration_study.py'), '--work-dirs', *globs, '--all-checkpoints',
             '--out', table, '--cfg-options', f'val_dataloader.dataset.data_root={voc}',
             *shlex.split(args.study_args)]
    if args.models:
        study += ['--models', *args.models]
    if args.nproc > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={args.nproc}',
               f'--master_port={free_port()}', *study, '--launcher', 'pytorch']
    else:
        cmd = [sys.executable, *study]
    study_status = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED='1')).returncode
    if not osp.isfile(table):
        raise RuntimeError(f'the study wrote no table ({table}); see the log above')
    analyze = [sys.executable, osp.join(REPO_ROOT, 'tools', 'analyze_study.py'), table, '--out-dir', args.out_dir]
    this = [sys.executable, osp.join(REPO_ROOT, 'tools', 'run_demo_study.py'), *(argv if argv is not None
                                                                                 else sys.argv[1:])]
    reproduce = ['python tools/dataset_converters/generate_demo_data.py --out data/demo  # once',
                 'python tools/compare_methods.py --reuse  # 7 losses x 600 iterations -> work_dirs/compare',
                 command_line(this) + '  # the extra runs, then the two commands below',
                 command_line(cmd), command_line(analyze)]
    subprocess.run(analyze + [a for line in reproduce for a in ('--reproduce', line)], check=True)
    with open(table) as f:
        rows = max(0, sum(1 for _ in f) - 1)
    print(f'[demo-study] {rows} models in {table}; figures and summary.md in {args.out_dir} '
          f'({time.time() - start:.0f} s)', flush=True)
    if rows < MIN_MODELS:
        print(f'[demo-study] warning: {rows} models (< {MIN_MODELS}): Kendall tau is mostly noise', flush=True)
    if study_status:
        print(f'[demo-study] some models failed: see {osp.splitext(table)[0]}.failures.csv', flush=True)
    return study_status


if __name__ == '__main__':
    sys.exit(main())
