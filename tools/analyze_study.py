"""Analyse a calibration study table (``tools/calibration_study.py``): rank correlations, bins, TS, accuracy.

    python tools/analyze_study.py docs/study/study.csv --out-dir docs/study [--reproduce "CMD" ...] [--force]

Writes into ``--out-dir`` (``calibseg.study.analysis``; existing outputs only with ``--force``):

* ``kendall_tau.png`` (+ ``kendall_tau_pre.csv``, ``kendall_tau_post.csv``): Kendall's tau-b between every pair of
  metrics across the models, before and after temperature scaling;
* ``bin_sensitivity.png``: tau between the value at ``B`` bins and at 15 bins, and the median ratio, per family;
* ``accuracy_vs_calibration.png``: mIoU against ECE-15 and NLL, pre and post TS, with tau;
* ``ts_gain.png``: TS gain (``ECE_15 - post_ECE_15``, ``NLL - post_NLL``) against the pre-TS value;
* ``summary.md``: the key numbers, the per-model table and the figures (the ``--reproduce`` commands on top).
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
    args = parser.parse_args(argv)
    try:
        paths = analyze(args.table, args.out_dir, reproduce=args.reproduce, force=args.force)
    except (OSError, KeyError, ValueError) as err:
        print(f'analyze_study: error: {err}', file=sys.stderr)
        return 1
    print('[analyze] wrote ' + ', '.join(sorted(osp.basename(p) for p in paths.values())) + f' into {args.out_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
