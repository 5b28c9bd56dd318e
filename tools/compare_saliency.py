"""Train BCE, SC-BCE and ASLP on the embedded saliency data under one budget and write the comparison.

    python tools/compare_saliency.py [--data-root data/demo] [--work-dir work_dirs/compare_saliency] [--reuse]
        [--max-epochs N] [--no-write]

Same data (the demo DUTS copy: 108 DUTS-TR training images, 12 held out, 40 DUTS-TE test images of 96 px), model
(FCN ResNetV1c-18 OS16 from scratch, one sigmoid channel), schedule (30 epochs of batch 8, SGD + poly) and seed for
the three configs in ``configs/saliency/fcn_r18-d16_*_1xb8-30ep_demo-duts-96x96.py``; each is tested on DUTS-TE and
the table (methods as columns: MAE, max-F, S-measure, ECE, OE, NLL, and the final mean alpha of ASLP's table) is
written between the results markers of ``configs/saliency/README.md`` with the command that reproduces it.
``--max-epochs`` shortens every run (to check the script; ASLP's first update epoch is then moved to the last epoch
if it lay beyond it); ``--reuse`` skips runs whose final checkpoint exists.
"""
from __future__ import annotations

import argparse
import os.path as osp
import platform
import time
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config

from calibseg.apis.experiment import (
    REPO_ROOT,
    markdown_table,
    method_name,
    run_name,
    test_latest,
    train,
    write_marked_section,
)

CONFIGS = tuple(osp.join('configs', 'saliency', f'fcn_r18-d16_{m}_1xb8-30ep_demo-duts-96x96.py')
                for m in ('bce', 'scbce', 'aslp'))
README = osp.join(REPO_ROOT, 'configs', 'saliency', 'README.md')
ROWS = (
    ('MAE', 'MAE', '{:.4f}'),
    ('maxF', 'max-F', '{:.4f}'),
    ('Sm', 'S-measure', '{:.4f}'),
    ('meanEm', 'mean E-measure', '{:.4f}'),
    ('ECE', 'ECE_10 (%)', '{:.2f}'),
    ('OE_10', 'OE_10 (%)', '{:.2f}'),
    ('NLL', 'NLL', '{:.4f}'),
    ('alpha_mean', 'mean alpha (ASLP table)', '{:.4f}'),
    ('alpha_q50', 'median alpha (ASLP table)', '{:.4f}'),
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--data-root', default='data/demo', help='folder holding the demo DUTS/ (generator output)')
    parser.add_argument('--work-dir', default='work_dirs/compare_saliency')
    parser.add_argument('--max-epochs', type=int, default=None, help='shorter runs (to check the script)')
    parser.add_argument('--reuse', action='store_true', help='do not retrain runs that finished')
    parser.add_argument('--no-write', action='store_true', help='print the table only')
    return parser.parse_args(argv)


def data_options(data_root: str) -> List[str]:
    """``--cfg-options`` pointing every loader of the demo saliency configs at ``<data_root>/DUTS``."""
    duts = osp.join(data_root, 'DUTS')
    return [f'train_dataloader.dataset.dataset.data_root={duts}',
            f'aslp_val_dataloader.dataset.dataset.data_root={duts}',
            f'val_dataloader.dataset.data_root={duts}', f'test_dataloader.dataset.data_root={duts}']


def budget_options(config: str, max_epochs: Optional[int]) -> List[str]:
    """Options for a shorter schedule (the same for every method; ASLP updates at least in the last epoch)."""
    if not max_epochs:
        return []
    opts = [f'train_cfg.max_epochs={max_epochs}', f'train_cfg.val_interval={max_epochs}',
            f'default_hooks.checkpoint.interval={max_epochs}', f'param_scheduler.0.end={max_epochs}']
    model = Config.fromfile(config).model
    if model.get('type') == 'ASLPEncoderDecoder' and model.get('update_from_epoch', 6) > max_epochs:
        opts.append(f'model.update_from_epoch={max_epochs}')
    return opts


def max_epochs_of(config: str, max_epochs: Optional[int]) -> int:
    return max_epochs or Config.fromfile(config).train_cfg.max_epochs


def alpha_statistics(work_dir: str) -> Dict[str, float]:
    """Mean and median of the ASLP table in the run's newest checkpoint (empty for other methods)."""
    from mmengine.runner import find_latest_checkpoint

    from calibseg.compat import load_trusted_checkpoint
    from calibseg.engine.hooks.aslp_hook import alpha_summary

    ckpt = find_latest_checkpoint(work_dir)
    alpha = load_trusted_checkpoint(ckpt, map_location='cpu')['state_dict'].get('aslp_alpha') if ckpt else None
    if alpha is None or alpha.numel() == 0:
        return {}
    summary = alpha_summary(alpha)
    return dict(alpha_mean=summary['mean'], alpha_q50=summary['q50'])


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if not osp.isdir(osp.join(args.data_root, 'DUTS', 'DUTS-TR')):
        raise FileNotFoundError(f'no demo DUTS data in {args.data_root}: run '
                                '`python tools/dataset_converters/generate_demo_data.py --out data/demo`')
    results: Dict[str, Dict[str, float]] = {}
    start = time.time()
    for rel in CONFIGS:
        config = osp.join(REPO_ROOT, rel)
        work_dir = osp.join(args.work_dir, run_name(config))
        opts = data_options(args.data_root) + budget_options(config, args.max_epochs)
        final = osp.join(work_dir, f'epoch_{max_epochs_of(config, args.max_epochs)}.pth')
        if not (args.reuse and osp.isfile(final)):
            train(config, work_dir, opts)
        metrics = dict(test_latest(config, work_dir, opts))
        metrics.update(alpha_statistics(work_dir))
        results[method_name(config).upper().replace('SCBCE', 'SC-BCE')] = metrics
    epochs = args.max_epochs or 30
    command = 'python tools/compare_saliency.py' + (f' --max-epochs {args.max_epochs}' if args.max_epochs else '')
    note = (f'Embedded demo data (`tools/dataset_converters/generate_demo_data.py`, seed 0): 108 DUTS-TR training '
            f'images (12 more held out for ASLP\'s validation accuracy), tested on the 40 DUTS-TE images, 96 px. '
            f'FCN ResNetV1c-18 OS16 from scratch with one sigmoid channel, {epochs} epoch(s) of batch 8 (SGD lr 0.02, '
            f'poly), seed 0, CPU ({platform.machine()}, torch {torch.__version__}). SC-BCE: beta 2, alpha 0.025; '
            f'ASLP: beta 2, alpha_0 0, updates from epoch {min(6, epochs)}, eta 0.002, lambda 2000. Saliency '
            'measures on the raw probabilities; ECE/OE with 10 bins on max(p, 1-p), pooled over all pixels, in '
            f'percent. One run per method. Reproduce: `{command}` ({time.time() - start:.0f} s here).\n\n')
    table = note + markdown_table(results, ROWS)
    print(table)
    if not args.no_write:
        write_marked_section(README, table)
        print(f'[compare_saliency] table written into {osp.relpath(README, REPO_ROOT)}')


if __name__ == '__main__':
    main()
