"""Evaluate a checkpoint with mmengine's Runner (mmseg's CLI conventions).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--quiet] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [args...]

A command line over :func:`calibseg.apis.test`: only the test dataloader's data must exist. The checkpoint named
here is loaded as a trusted file (full unpickling, needed for checkpoints that mmengine's Runner saved under
torch >= 2.6); pass --weights-only for files of unknown origin (plain state dicts only).
"""
import argparse
import os

from mmengine.config import DictAction


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test a segmentor (calibseg)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs, metrics and diagrams')
    parser.add_argument('--weights-only', action='store_true',
                        help="load the checkpoint with torch's safe loader (weights_only=True)")
    parser.add_argument('--quiet', action='store_true',
                        help='only the test result on the console; full log in the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    from calibseg.apis import test

    test(args.config, args.checkpoint, work_dir=args.work_dir, cfg_options=args.cfg_options,
         weights_only=args.weights_only, launcher=args.launcher, quiet=args.quiet)


if __name__ == '__main__':
    main()
