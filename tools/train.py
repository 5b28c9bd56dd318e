"""Train a segmentor with mmengine's Runner (mmseg's CLI, plus calibseg's CPU/torch-2.6+ compatibility).

    python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp] [--quiet] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NPROC [args...]        # torchrun; gloo on CPU, nccl on GPU

A command line over :func:`calibseg.apis.train`. ``--quiet``: one progress line and a short validation result on
the console, mmengine's full log in the run's work directory.
"""
import argparse
import os

from mmengine.config import DictAction


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor (calibseg)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the newest checkpoint in the work dir (a trusted file: the same '
                        'Runner wrote it; refused if last_checkpoint points outside the work dir), or from '
                        '`load_from` if the config sets one')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument('--quiet', action='store_true',
                        help='progress line and short results on the console; full log in the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    from calibseg.apis import train

    train(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options, resume=args.resume, amp=args.amp,
          launcher=args.launcher, quiet=args.quiet)


if __name__ == '__main__':
    main()
