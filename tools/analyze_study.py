"""Analyse a calibration study table (``tools/calibration_study.py``): rank correlations, bins, TS, accuracy.

    python tools/analyze_study.py docs/study/study.csv --out-dir docs/study [--reproduce "CMD" ...] [--force]
        [--cross-table docs/study/cityscapes/study.csv]

Writes into ``--out-dir`` (``calibseg.study.analysis``; existing outputs only with ``--force``):

* ``kendall_tau.png`` (+ ``kendall_tau_pre.csv``, ``kendall_tau_post.csv``): Kendall's tau-b between every pair of
  metrics across the models, before and after temperature scaling;
* ``bin_sensitivity.png``: tau between the value at ``B`` bins and at 15 bins, and the median ratio, per family;
* ``accuracy_vs_calibration.png``: mIoU against ECE-15 and NLL, pre and post TS, with tau;
* ``ts_gain.png``: TS gain (``ECE_15 - post_ECE_15``, ``NLL - post_NLL``) against the pre-TS value;
* ``summary.md``: the key numbers, the benchmark's seven questions answered with their noise levels, the
  per-model table and the figures (the ``--reproduce`` commands on top);
* with robustness columns (a study measured with ``--corruptions``): ``robustness.png``, ``robustness_tau.csv``
  (tau between the mIoU drop / corrupted mIoU and each calibration metric, pre and post TS);
* with ``--cross-table`` (the same recipes' study on another dataset, e.g. ``docs/study/cityscapes/study.csv``):
  ``cross_dataset.png``, ``cross_dataset_tau.csv`` (tau of the recipes' final-checkpoint values between datasets).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from typing import Optional, Sequence

from calibseg.study import analyze


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('table', help='the CSV written by tools/calibration_study.py')
    parser.add_argument('--out-dir', required=True, help='folder of the figures and summary.md')
    parser.add_argument('--reproduce', action='append', default=[],
                        help='a command line shown at the top of summary.md (repeatable)')
    parser.add_argument('--force', action='store_true', help='replace existing outputs in --out-dir')
    parser.add_argument('--cross-table', help='study table of the same recipes on a second dataset')
    parser.add_argument('--cross-name', default='Cityscapes demo', help='the second dataset\'s name in the report')
    args = parser.parse_args(argv)
    try:
        paths = analyze(args.table, args.out_dir, reproduce=args.reproduce, force=args.force,
                        cross_table=args.cross_table, cross_name=args.cross_name)
    except (OSError, KeyError, ValueError) as err:
        print(f'analyze_study: error: {err}', file=sys.stderr)
        return 1
    print('[analyze] wrote ' + ', '.join(sorted(osp.basename(p) for p in paths.values())) + f' into {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
