"""Train BCE, SC-BCE and ASLP on the embedded saliency data under one budget and write the comparison.

    python tools/compare_saliency.py [--data-root data/demo] [--work-dir work_dirs/compare_saliency] [--reuse]
        [--max-epochs N] [--no-write] [--soft]

Same data (the demo DUTS copy: 108 DUTS-TR training images, 12 held out, 40 DUTS-TE test images of 96 px), model
(FCN ResNetV1c-18 OS16 from scratch, one sigmoid channel), schedule (30 epochs of batch 8, SGD + poly) and seed for
the three configs in ``configs/saliency/fcn_r18-d16_*_1xb8-30ep_demo-duts-96x96.py``; each is tested on DUTS-TE and
the table (methods as columns: MAE, max-F, S-measure, ECE, OE, NLL, and the final mean alpha of ASLP's table) is
written between the results markers of ``configs/saliency/README.md`` with the command that reproduces it.
``--max-epochs`` shortens every run (to check the script; ASLP's first update epoch is then moved to the last epoch
if it lay beyond it); ``--reuse`` skips runs whose final checkpoint exists. ``--soft`` also trains SC-BCE and ASLP on
soft targets (``fcn_r18-d16_{scbce,aslp}-soft_...``: grey masks / 255 instead of the binarised masks, as the reference
code trains) and adds them as two more columns.
"""
from __future__ import annotations

import argparse
import os.path as osp
import platform
import time
from typing import Dict, Optional, Sequence

import torch
from mmengine.config import Config

from calibseg.apis.experiment import (
    REPO_ROOT,
    aslp_alpha_statistics,
    ensure_demo_data,
    epoch_budget_options,
    markdown_table,
    method_name,
    run_name,
    saliency_data_options,
    test_latest,
    train,
    write_marked_section,
)

CONFIGS = tuple(osp.join('configs', 'saliency', f'fcn_r18-d16_{m}_1xb8-30ep_demo-duts-96x96.py')
                for m in ('bce', 'scbce', 'aslp'))
SOFT_CONFIGS = tuple(osp.join('configs', 'saliency', f'fcn_r18-d16_{m}-soft_1xb8-30ep_demo-duts-96x96.py')
                     for m in ('scbce', 'aslp'))
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
    parser.add_argument('--soft', action='store_true',
                        help='also SC-BCE and ASLP trained on soft targets (grey masks / 255, as the reference code)')
    parser.add_argument('--verbose', action='store_true', help="mmengine's full logs on the console too")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    ensure_demo_data(args.data_root, datasets=('duts',))
    results: Dict[str, Dict[str, float]] = {}
    start = time.time()
    for rel in CONFIGS + (SOFT_CONFIGS if args.soft else ()):
        config = osp.join(REPO_ROOT, rel)
        work_dir = osp.join(args.work_dir, run_name(config))
        opts = saliency_data_options(args.data_root) + epoch_budget_options(config, args.max_epochs)
        final = osp.join(work_dir, f'epoch_{args.max_epochs or Config.fromfile(config).train_cfg.max_epochs}.pth')
        if not (args.reuse and osp.isfile(final)):
            train(config, work_dir, opts, quiet=not args.verbose)
        metrics = dict(test_latest(config, work_dir, opts, quiet=not args.verbose))
        metrics.update(aslp_alpha_statistics(work_dir))
        name = method_name(config).upper().replace('SCBCE', 'SC-BCE')
        results[name.replace('-SOFT', ' (soft targets)')] = metrics
    epochs = args.max_epochs or 30
    command = 'python tools/compare_saliency.py' + (f' --max-epochs {args.max_epochs}' if args.max_epochs else '') \
        + (' --soft' if args.soft else '')
    soft_note = (' "(soft targets)": trained on the grey masks / 255 instead of the masks binarised at > 128 '
                 '(evaluation on the binarised masks in every column).') if args.soft else ''
    note = (f'Embedded demo data (`tools/dataset_converters/generate_demo_data.py`, seed 0): 108 DUTS-TR training '
            f'images (12 more held out for ASLP\'s validation accuracy), tested on the 40 DUTS-TE images, 96 px. '
            f'FCN ResNetV1c-18 OS16 from scratch with one sigmoid channel, {epochs} epoch(s) of batch 8 (SGD lr 0.02, '
            f'poly), seed 0, CPU ({platform.machine()}, torch {torch.__version__}). SC-BCE: beta 2, alpha 0.025; '
            f'ASLP: beta 2, alpha_0 0, updates from epoch {min(6, epochs)}, eta 0.002, lambda 2000. Saliency '
            'measures on the raw probabilities; ECE/OE with 10 bins on max(p, 1-p), pooled over all pixels, in '
            f'percent.{soft_note} One run per method. Reproduce: `{command}` ({time.time() - start:.0f} s here).\n\n')
    table = note + markdown_table(results, ROWS)
    print(table)
    if not args.no_write:
        write_marked_section(README, table)
        print(f'[compare_saliency] table written into {osp.relpath(README, REPO_ROOT)}')


if __name__ == '__main__':
    main()
