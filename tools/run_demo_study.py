"""The demo calibration study: train extra small models, measure every model pre/post TS, analyse the table.

    python tools/run_demo_study.py [--data-root data/demo] [--work-dir work_dirs/study] [--out-dir docs/study]

1. Trains the extra runs of ``calibseg.study.demo.EXTRA_RUNS`` (losses, decode-head widths and training lengths
   differ; half-way and final checkpoints kept) into ``--work-dir/<name>``, skipping finished runs. With the
   7 losses x 2 checkpoints that ``tools/compare_methods.py`` leaves in ``work_dirs/compare`` (``--compare-dirs``)
   the study has 26 models or more.
2. Measures all of them (every checkpoint a model) into ``<out-dir>/study.csv`` (resumable), in this process or
   with ``--nproc N`` through torchrun, under the temperature-scaling protocol ``--ts-method`` (``grid-ece``, the
   benchmark's, by default; ``nll`` for the NLL fit: use another ``--out-dir``, a table holds one protocol).
3. Analyses the table into ``<out-dir>`` (figures, tau matrices, ``summary.md``; existing ones with ``--force``).

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
from typing import List, Optional, Sequence

from calibseg.apis.experiment import REPO_ROOT
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
from calibseg.study.demo import MIN_MODELS, train_extra_runs

STUDY_TOOL = osp.join(REPO_ROOT, 'tools', 'calibration_study.py')


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
    parser.add_argument('--ts-method', choices=TS_METHODS, default=DEFAULT_TS_METHOD,
                        help='temperature-scaling protocol of the study (see tools/calibration_study.py)')
    parser.add_argument('--force', action='store_true', help='replace the analysis files in --out-dir')
    return parser.parse_args(argv)


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


def study_command(args: argparse.Namespace, globs: List[str], table: str) -> List[str]:
    """The command line of the measurement (run under torchrun with ``--nproc`` > 1; shown in summary.md)."""
    voc = osp.join(args.data_root, 'VOCdevkit', 'VOC2012')
    cmd = [STUDY_TOOL, '--work-dirs', *globs, '--all-checkpoints', '--out', table,
           '--cfg-options', f'val_dataloader.dataset.data_root={voc}', '--ts-method', args.ts_method]
    cmd += ['--models', *args.models] if args.models else []
    if args.nproc > 1:
        return [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={args.nproc}',
                f'--master_port={free_port()}', *cmd, '--launcher', 'pytorch']
    return [sys.executable, *cmd]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if not osp.isdir(osp.join(args.data_root, 'VOCdevkit')):
        sys.exit(f'no demo data in {args.data_root}: run '
                 '`python tools/dataset_converters/generate_demo_data.py --out data/demo`')
    existing = [f for f in ANALYSIS_FILES if osp.exists(osp.join(args.out_dir, f))]
    if existing and not args.force:
        sys.exit(f'{args.out_dir} already holds {existing}: pass --force to replace the analysis')
    train_extra_runs(data_root=args.data_root, work_dir=args.work_dir, repo_root=REPO_ROOT,
                     max_iters=args.max_iters, train_options=args.train_options, skip_train=args.skip_train)
    os.makedirs(args.out_dir, exist_ok=True)
    table = osp.join(args.out_dir, 'study.csv')
    globs = [*args.compare_dirs, osp.join(args.work_dir, '*'), *args.work_dirs]
    cmd = study_command(args, globs, table)
    if args.nproc > 1:  # the processes of a torchrun group
        status = subprocess.run(cmd, env=dict(os.environ, PYTHONUNBUFFERED='1')).returncode
    else:
        voc = osp.join(args.data_root, 'VOCdevkit', 'VOC2012')
        protocol = StudyProtocol(ts_method=args.ts_method, cfg_options={'val_dataloader.dataset.data_root': voc})
        specs = discover_models(models=args.models, work_dirs=globs, all_checkpoints=True)
        _, failed = run_study(specs, out=table, protocol=protocol, device=init_study())
        status = int(failed > 0)
    if not osp.isfile(table):
        sys.exit(f'the study wrote no table ({table}); see the log above')
    this = [sys.executable, osp.join(REPO_ROOT, 'tools', 'run_demo_study.py'),
            *(argv if argv is not None else sys.argv[1:])]
    analyze_cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'analyze_study.py'), table, '--out-dir',
                   args.out_dir, '--force']
    reproduce = ['python tools/dataset_converters/generate_demo_data.py --out data/demo  # once',
                 'python tools/compare_methods.py --reuse  # 7 losses x 600 iterations -> work_dirs/compare',
                 command_line(this) + '  # the extra runs, then the two commands below',
                 command_line(cmd), command_line(analyze_cmd)]
    analyze(table, args.out_dir, reproduce=reproduce, force=True)
    rows = len(read_table(table))
    print(f'[demo-study] {rows} models in {table}; figures and summary.md in {args.out_dir}', flush=True)
    if rows < MIN_MODELS:
        print(f'[demo-study] warning: {rows} models (< {MIN_MODELS}): Kendall tau is mostly noise', flush=True)
    if status:
        print(f'[demo-study] some models failed: see {osp.splitext(table)[0]}.failures.csv', flush=True)
    return status


if __name__ == '__main__':
    sys.exit(main())
