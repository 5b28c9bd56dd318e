"""Train a segmentor with mmengine's Runner (mmseg's CLI, plus calibseg's CPU/torch-2.6+ compatibility).

    python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp] [--cfg-options k=v ...]
    bash tools/dist_train.sh CONFIG NPROC [args...]        # torchrun; gloo on CPU, nccl on GPU
"""
import argparse
import os

from mmengine.config import DictAction
from mmengine.runner import Runner

from calibseg.utils.run_setup import load_run_config


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a segmentor (calibseg)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the newest checkpoint in the work dir (a trusted file: the same '
                        'Runner wrote it), or from `load_from` if the config sets one')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main() -> None:
    args = parse_args()
    cfg = load_run_config(args.config, work_dir=args.work_dir, cfg_options=args.cfg_options,
                          launcher=args.launcher, resume=args.resume)
    if args.amp:
        if cfg.optim_wrapper.type not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, got {cfg.optim_wrapper.type}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
