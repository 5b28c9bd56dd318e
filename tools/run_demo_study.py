"""The demo calibration study: train extra small models, measure every model pre/post TS, analyse the table.

    python tools/run_demo_study.py [--data-root data/demo] [--work-dir work_dirs/study] [--out-dir docs/study]
    python tools/run_demo_study.py --dataset cityscapes   # the same recipes on the Cityscapes copy

``--dataset voc`` (default):

1. Generates the demo data if ``--data-root`` has none; trains the 12 demo recipes into ``work_dirs/compare``
   exactly as ``tools/compare_methods.py`` does (600 iterations, half-way and final checkpoints; only those not
   finished, and none when ``--compare-dirs`` names other work dirs), then the extra runs of
   ``calibseg.study.demo.EXTRA_RUNS`` (losses, decode-head widths and training lengths differ) into
   ``--work-dir/<name>``, skipping finished runs: 12 x 2 + 6 x 2 = 36 models. On a fresh clone this one command
   is the whole study (about an hour of training on 2 cores, then the measurement).
2. Measures all of them (every checkpoint a model) into ``<out-dir>/study.csv`` (resumable), in this process or
   with ``--nproc N`` through torchrun, under the temperature-scaling protocol ``--ts-method`` (``grid-ece``, the
   benchmark's, by default; ``nll`` for the NLL fit: use another ``--out-dir``, a table holds one protocol), and
   under ``--corruptions`` (default ``demo``: one corruption per family at severity 3, T fitted on clean data; the
   robustness question; ``none`` to skip).
3. Analyses the table into ``<out-dir>`` (figures, tau matrices, ``summary.md`` with the benchmark's seven
   questions; existing ones with ``--force``). The cross-dataset question reads ``--cross-table`` (default
   ``<out-dir>/cityscapes/study.csv`` when it exists).

``--dataset cityscapes`` (defaults ``--data-root data/demo_cityscapes``, ``--work-dir work_dirs/study_cityscapes``,
``--out-dir docs/study/cityscapes``, no corruptions): generates the study's Cityscapes copy (32 train / 60 val
images of 64x128, ``calibseg.study.cityscapes``), trains the 12 demo recipes on it for ``--max-iters`` iterations
(default ``CITYSCAPES_ITERS`` = 150; half-way and final checkpoints) into ``--work-dir``, measures and analyses
them like the VOC study. Run it before the VOC study, whose analysis then answers the cross-dataset question.

Cost (measured on a shared 2-core machine, one thread per process): the 12 compare runs about 3.5-5 minutes each
(RankMixup M-NDCG and γ-Net more); the 12 Cityscapes trainings about 7-11 minutes at 150 iterations (9-14 at
200), their 24 measurements 1-3 minutes; the VOC study's 4
corruption passes add about 11 s per model on one contended thread (about 7 minutes for 36 models; ``all`` 20
corruptions five times that).

A quick end-to-end check with tiny budgets: ``--max-iters 4 --out-dir /tmp/study --work-dir /tmp/study/runs``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shlex
import socket
import subprocess
import sys
from typing import List, Optional, Sequence, Tuple

from calibseg.apis.experiment import REPO_ROOT, ensure_demo_data
from calibseg.study import (
    ANALYSIS_FILES,
    DEFAULT_TS_METHOD,
    TS_METHODS,
    StudyProtocol,
    analyze,
    discover_models,
    init_study,
    read_table,
    run_study,
)
from calibseg.study.cityscapes import CITYSCAPES_ITERS, ensure_cityscapes_data, train_cityscapes_recipes
from calibseg.study.demo import COMPARE_WORK_DIR, MIN_MODELS, train_compare_runs, train_extra_runs
from calibseg.study.protocol import DEFAULT_SEVERITY, DEMO_CORRUPTIONS

STUDY_TOOL = osp.join(REPO_ROOT, 'tools', 'calibration_study.py')
#: per dataset, the defaults of the options left unset
DATASET_DEFAULTS = {
    'voc': dict(data_root='data/demo', work_dir='work_dirs/study', out_dir='docs/study',
                compare_dirs=[COMPARE_WORK_DIR + '/*'], corruptions=['demo']),
    'cityscapes': dict(data_root='data/demo_cityscapes', work_dir='work_dirs/study_cityscapes',
                       out_dir=osp.join('docs', 'study', 'cityscapes'), compare_dirs=[], corruptions=['none']),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset', choices=sorted(DATASET_DEFAULTS), default='voc',
                        help='voc: the demo study; cityscapes: the demo recipes on the Cityscapes copy')
    parser.add_argument('--data-root', default=None, help='default: data/demo (voc), data/demo_cityscapes')
    parser.add_argument('--work-dir', default=None,
                        help='where the runs are trained (default: work_dirs/study, work_dirs/study_cityscapes)')
    parser.add_argument('--compare-dirs', nargs='*', default=None,
                        help='globs of existing work dirs to include (default for voc: work_dirs/compare/*, the '
                             'tools/compare_methods.py output; none for cityscapes)')
    parser.add_argument('--work-dirs', nargs='*', default=[], help='more work-dir globs to include')
    parser.add_argument('--models', nargs='*', default=[], metavar='CONFIG.py:CHECKPOINT', help='more models')
    parser.add_argument('--out-dir', default=None,
                        help='study.csv, figures and summary.md (default: docs/study, docs/study/cityscapes)')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='voc: train every extra run for this many iterations instead (quick checks); '
                             f'cityscapes: iterations of every recipe (default {CITYSCAPES_ITERS})')
    parser.add_argument('--train-options', nargs='*', default=[], help='extra --cfg-options for the trainings')
    parser.add_argument('--skip-train', action='store_true', help='measure and analyse what exists')
    parser.add_argument('--nproc', type=int, default=1, help='processes of the study (torchrun when > 1)')
    parser.add_argument('--ts-method', choices=TS_METHODS, default=DEFAULT_TS_METHOD,
                        help='temperature-scaling protocol of the study (see tools/calibration_study.py)')
    parser.add_argument('--corruptions', nargs='+', default=None, metavar='NAME',
                        help=f"robustness: corruptions of the test split ('demo' = {', '.join(DEMO_CORRUPTIONS)}; "
                             "names, families, 'all'; 'none'); default demo for voc, none for cityscapes")
    parser.add_argument('--corruption-severity', type=int, default=DEFAULT_SEVERITY,
                        help=f'severity 1-5 of the corruptions (default {DEFAULT_SEVERITY})')
    parser.add_argument('--cross-table', default=None,
                        help='study table of the same recipes on the other dataset (default for voc: '
                             '<out-dir>/cityscapes/study.csv when it exists)')
    parser.add_argument('--force', action='store_true', help='replace the analysis files in --out-dir')
    args = parser.parse_args(argv)
    args.train_compare = args.dataset == 'voc' and args.compare_dirs is None
    for key, value in DATASET_DEFAULTS[args.dataset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.cross_table is None and args.dataset == 'voc':
        default = osp.join(args.out_dir, 'cityscapes', 'study.csv')
        args.cross_table = default if osp.isfile(default) else None
    return args


def shown(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (no machine paths in the docs)."""
    rel = osp.relpath(path)
    return path if rel.startswith('..') else rel


def command_line(cmd: Sequence[str]) -> str:
    parts = ['python' if c == sys.executable else shown(c) if osp.isabs(c) else c for c in cmd]
    return ' '.join(shlex.quote(p) for p in parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def data_option(args: argparse.Namespace) -> Tuple[str, str]:
    """The ``--cfg-options`` entry that points every model's val split at this machine's data."""
    if args.dataset == 'voc':
        return 'val_dataloader.dataset.data_root', osp.join(args.data_root, 'VOCdevkit', 'VOC2012')
    return 'val_dataloader.dataset.data_root', osp.join(args.data_root, 'cityscapes')


def study_command(args: argparse.Namespace, globs: List[str], table: str) -> List[str]:
    """The command line of the measurement (run under torchrun with ``--nproc`` > 1; shown in summary.md)."""
    key, value = data_option(args)
    cmd = [STUDY_TOOL, '--work-dirs', *globs, '--all-checkpoints', '--out', table,
           '--cfg-options', f'{key}={value}', '--ts-method', args.ts_method]
    if [c for c in args.corruptions if c != 'none']:
        cmd += ['--corruptions', *args.corruptions, '--corruption-severity', str(args.corruption_severity)]
    cmd += ['--models', *args.models] if args.models else []
    if args.nproc > 1:
        return [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={args.nproc}',
                f'--master_port={free_port()}', *cmd, '--launcher', 'pytorch']
    return [sys.executable, *cmd]


def train_runs(args: argparse.Namespace) -> None:
    """The dataset's own trainings (skipping finished ones): the 12 compare runs (voc, unless ``--compare-dirs``
    is given) and the extra runs (voc), or the recipes (cityscapes)."""
    if args.dataset == 'voc':
        if args.train_compare:
            train_compare_runs(data_root=args.data_root, work_dir=COMPARE_WORK_DIR, repo_root=REPO_ROOT,
                               skip_train=args.skip_train)
        train_extra_runs(data_root=args.data_root, work_dir=args.work_dir, repo_root=REPO_ROOT,
                         max_iters=args.max_iters, train_options=args.train_options, skip_train=args.skip_train)
    else:
        train_cityscapes_recipes(data_root=data_option(args)[1], work_dir=args.work_dir, repo_root=REPO_ROOT,
                                 max_iters=args.max_iters or CITYSCAPES_ITERS, train_options=args.train_options,
                                 skip_train=args.skip_train)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.dataset == 'voc' and ensure_demo_data(args.data_root, datasets=('voc',)):
        print(f'[demo-study] generated the demo data in {args.data_root}', flush=True)
    if args.cross_table and not osp.isfile(args.cross_table):
        sys.exit(f'--cross-table {args.cross_table}: no such file')
    existing = [f for f in ANALYSIS_FILES if osp.exists(osp.join(args.out_dir, f))]
    if existing and not args.force:
        sys.exit(f'{args.out_dir} already holds {existing}: pass --force to replace the analysis')
    if args.dataset == 'cityscapes':
        try:
            ensure_cityscapes_data(args.data_root)
        except FileExistsError as err:
            sys.exit(f'run_demo_study: error: {err}')
    train_runs(args)
    os.makedirs(args.out_dir, exist_ok=True)
    table = osp.join(args.out_dir, 'study.csv')
    globs = [*args.compare_dirs, osp.join(args.work_dir, '*'), *args.work_dirs]
    cmd = study_command(args, globs, table)
    if args.nproc > 1:  # the processes of a torchrun group
        status = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED='1')).returncode
    else:
        key, value = data_option(args)
        protocol = StudyProtocol(ts_method=args.ts_method, cfg_options={key: value},
                                 corruptions=tuple(args.corruptions), corruption_severity=args.corruption_severity)
        specs = discover_models(models=args.models, work_dirs=globs, all_checkpoints=True)
        try:
            _, failed = run_study(specs, out=table, protocol=protocol, device=init_study())
        except ValueError as err:  # e.g. a table of another protocol
            sys.exit(f'run_demo_study: error: {err}')
        status = int(failed > 0)
    if not osp.isfile(table):
        sys.exit(f'the study wrote no table ({table}); see the log above')
    this = [sys.executable, osp.join(REPO_ROOT, 'tools', 'run_demo_study.py'),
            *(argv if argv is not None else sys.argv[1:])]
    analyze_cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'analyze_study.py'), table, '--out-dir',
                   args.out_dir, '--force'] + (['--cross-table', args.cross_table] if args.cross_table else [])
    if args.dataset == 'voc':
        reproduce = [command_line(this) + '  # the data, the 12 compare runs and the extra runs (those missing), '
                                           'then the two commands below',
                     command_line(cmd), command_line(analyze_cmd)]
    else:
        reproduce = [command_line(this) + '  # the data, the recipes, then the two commands below',
                     command_line(cmd), command_line(analyze_cmd)]
    analyze(table, args.out_dir, reproduce=reproduce, force=True, cross_table=args.cross_table)
    rows = len(read_table(table))
    print(f'[demo-study] {rows} models in {table}; figures and summary.md in {args.out_dir}', flush=True)
    if rows < MIN_MODELS:
        print(f'[demo-study] warning: {rows} models (< {MIN_MODELS}): Kendall tau is mostly noise', flush=True)
    if status:
        print(f'[demo-study] some models failed: see {osp.splitext(table)[0]}.failures.csv', flush=True)
    return status


if __name__ == '__main__':
    sys.exit(main())
