"""Evaluate one checkpoint on every saliency test set of a config: one block per set, then a summary table.

    python tools/test_saliency.py CONFIG CHECKPOINT [--datasets DUTS-TE ECSSD ...] [--data-root DIR]
        [--work-dir DIR] [--out FILE] [--weights-only] [--cfg-options k=v ...]
    python -m torch.distributed.run --nproc_per_node N tools/test_saliency.py ... --launcher pytorch

A command line over :func:`calibseg.apis.saliency_sets.evaluate_saliency_sets`. The test sets are the config's
``saliency_test_sets`` (e.g. DUTS-TE, ECSSD, HKU-IS, PASCAL-S, DUT-OMRON and SOD in
``configs/_base_/datasets/duts_384x384.py``), evaluated with its ``test_dataloader`` settings and
``test_evaluator``. ``--data-root DIR`` reads every set from ``DIR/<folder name of its data_root>``. A set whose
folders are missing is skipped with a message naming the missing paths; a set that fails to load is reported; the
others proceed. The summary (Markdown) is printed and written to ``--out`` (default
``<work_dir>/saliency_results.md``, with every metric in ``saliency_results.json`` beside it).

Exit status: 0 when at least one set was evaluated and none failed (missing sets are only reported), else 1.
The checkpoint is loaded as a trusted file (see tools/test.py) unless ``--weights-only``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Optional, Sequence

from mmengine.config import DictAction
from mmengine.dist import is_main_process

from calibseg.apis.saliency_sets import evaluate_saliency_sets, write_saliency_results


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file with a `saliency_test_sets` dict')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--datasets', nargs='+', help='names of the test sets to evaluate (default: all)')
    parser.add_argument('--data-root', help='read every test set from DATA_ROOT/<folder name of its data_root>')
    parser.add_argument('--work-dir', help='the dir for logs and reliability diagrams (default work_dirs/<config>)')
    parser.add_argument('--out', help='Markdown summary file (default <work_dir>/saliency_results.md)')
    parser.add_argument('--weights-only', action='store_true',
                        help="load the checkpoint with torch's safe loader (weights_only=True)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    out = evaluate_saliency_sets(args.config, args.checkpoint, datasets=args.datasets, data_root=args.data_root,
                                 work_dir=args.work_dir, cfg_options=args.cfg_options, weights_only=args.weights_only,
                                 launcher=args.launcher, echo=lambda text: print(text, flush=True))
    if is_main_process():
        path = args.out or osp.join(out.work_dir, 'saliency_results.md')
        write_saliency_results(out, path)
        print('\n' + out.table, flush=True)
        print(f'\n[test_saliency] summary written to {path}', flush=True)
    if not out.results:
        print('[test_saliency] no test set was evaluated', file=sys.stderr, flush=True)
    return 0 if out.ok else 1


if __name__ == '__main__':
    sys.exit(main())
