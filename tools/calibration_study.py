"""Measure many segmentation models before and after temperature scaling: one table row per model.

    python tools/calibration_study.py --work-dirs 'work_dirs/compare/*' [--all-checkpoints] --out study.csv
    python tools/calibration_study.py --models CONFIG.py:CHECKPOINT ... --out study.csv [--cfg-options k=v]
    torchrun --nproc_per_node N tools/calibration_study.py ... --launcher pytorch

The per-pixel version of the benchmark study of calibration (Tao et al., ICLR 2024). Each model's temperature is
fitted on one part of the data and every metric measured on the other (``calibseg.study.measure``); the table is
resumable and checksummed (``calibseg.study.table``; columns in ``calibseg.study.runner``). Temperature-scaling
protocols (``--ts-method``): ``grid-ece`` (default, the benchmark's: T in {0.1, ..., 10} with the lowest ECE-15 of
the fit split), ``grid-nll``, ``nll`` (minimise NLL, Newton on 1/T). ``--corruptions demo`` (or names, families,
``all``) also measures every model on corrupted copies of the test split at ``--corruption-severity`` with the
clean-fitted T (robustness columns ``shift_*``, ``post_shift_*``, ``mIoU_drop``; a table holds one protocol, so
give it its own ``--out``). Exit status 1 if any model failed (see ``<out stem>.failures.csv``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from mmengine.config import DictAction

from calibseg.study import DEFAULT_TS_METHOD, TS_METHODS, StudyProtocol, discover_models, init_study, run_study
from calibseg.study.protocol import DEFAULT_FIT_PIXELS, DEFAULT_SEVERITY, DEMO_CORRUPTIONS


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_argument_group('models')
    src.add_argument('--models', nargs='+', default=[], metavar='CONFIG.py:CHECKPOINT',
                     help='config and checkpoint pairs')
    src.add_argument('--model-list', help='text/CSV file with one "CONFIG CHECKPOINT" pair a line')
    src.add_argument('--work-dirs', nargs='+', default=[], metavar='GLOB',
                     help="mmengine work directories (globs, quoted: 'work_dirs/compare/*'): the config dumped "
                          'there and its newest iter_*.pth')
    src.add_argument('--all-checkpoints', action='store_true',
                     help='every iter_*.pth / epoch_*.pth of a work dir is a model (training length as a factor)')
    parser.add_argument('--out', required=True, help='the CSV table (appended; a .parquet beside it with pyarrow)')
    proto = parser.add_argument_group('protocol')
    proto.add_argument('--split-source', default='val_dataloader',
                       help='dataloader of the config split into fit/test parts (default: val_dataloader)')
    proto.add_argument('--fit-fraction', type=float, default=0.5,
                       help='fraction of the split source used to fit TS (HeldOutSplit held_out; default 0.5)')
    proto.add_argument('--split-seed', type=int, default=0, help='HeldOutSplit seed and pixel-subsampling seed')
    proto.add_argument('--fit-split', help='fit on this dataloader of the config instead (with --test-split)')
    proto.add_argument('--test-split', help='measure on this dataloader of the config (with --fit-split)')
    proto.add_argument('--ts-method', choices=TS_METHODS, default=DEFAULT_TS_METHOD,
                       help='grid-ece (default, the benchmark protocol) / grid-nll: T in {0.1..10} minimising '
                            'ECE-15 / NLL on the fit split; nll: minimise NLL (Newton on 1/T)')
    proto.add_argument('--fit-pixels-per-image', type=int, default=DEFAULT_FIT_PIXELS,
                       help=f'labelled pixels kept per fit image (0: all; default {DEFAULT_FIT_PIXELS})')
    proto.add_argument('--ignore-index', type=int, default=255)
    proto.add_argument('--corruptions', nargs='+', default=[], metavar='NAME',
                       help='also measure under these corruptions of the test split, T fitted on clean data: '
                            f"names, families, 'all', or 'demo' ({', '.join(DEMO_CORRUPTIONS)}); default none")
    proto.add_argument('--corruption-severity', type=int, default=DEFAULT_SEVERITY,
                       help=f'severity 1-5 of every corruption (default {DEFAULT_SEVERITY})')
    proto.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of every config')
    run = parser.add_argument_group('run')
    run.add_argument('--weights-only', action='store_true',
                     help="load checkpoints with torch's safe loader (default: trusted, full unpickling)")
    run.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    run.add_argument('--num-workers', type=int, default=None, help="dataloader workers (default: the config's)")
    run.add_argument('--log-every', type=int, default=100, help='progress line every N images (0: none)')
    run.add_argument('--debug', action='store_true', help='print tracebacks of failing models')
    run.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    run.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.models or args.model_list or args.work_dirs):
        parser.error('name models with --models, --model-list or --work-dirs')
    try:
        args.protocol = StudyProtocol(
            split_source=args.split_source, fit_fraction=args.fit_fraction, split_seed=args.split_seed,
            fit_split=args.fit_split, test_split=args.test_split, ts_method=args.ts_method,
            fit_pixels_per_image=args.fit_pixels_per_image, ignore_index=args.ignore_index,
            cfg_options=dict(args.cfg_options or {}), corruptions=tuple(args.corruptions),
            corruption_severity=args.corruption_severity)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the study; returns the number of models that failed."""
    args = parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    device = init_study(launcher=args.launcher, device=args.device)
    specs = discover_models(models=args.models, model_list=args.model_list, work_dirs=args.work_dirs,
                            all_checkpoints=args.all_checkpoints)
    try:
        _, failures = run_study(specs, out=args.out, protocol=args.protocol, device=device,
                                weights_only=args.weights_only, num_workers=args.num_workers,
                                log_every=args.log_every, debug=args.debug)
    except ValueError as err:  # e.g. a table of another protocol
        sys.exit(f'calibration_study: error: {err}')
    return failures


if __name__ == '__main__':
    sys.exit(1 if main() else 0)
