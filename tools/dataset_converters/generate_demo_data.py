#!/usr/bin/env python
"""Generate calibseg's embedded demo data (small synthetic datasets in the real on-disk layouts).

    python tools/dataset_converters/generate_demo_data.py --out data/demo [--voc-train 32]
        [--voc-val 60] [--duts-train 120] [--duts-test 40] [--size 96] [--seed 0]
        [--only voc|duts|cityscapes] [--cityscapes]

Writes ``<out>/VOCdevkit/VOC2012`` (PASCAL VOC 2012 + SBD aug) and ``<out>/DUTS`` (saliency), plus
``<out>/cityscapes`` with ``--cityscapes``. The generator is :mod:`calibseg.datasets.demo` (layouts and generative
model documented there); a seed gives byte-identical files.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from calibseg.datasets.demo import DATASETS, DEFAULTS, generate_demo_data


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='data/demo', help='root folder (gets VOCdevkit/ and DUTS/)')
    p.add_argument('--voc-train', type=int, default=DEFAULTS['voc_train'],
                   help='number of training ids (train.txt + aug.txt)')
    p.add_argument('--voc-val', type=int, default=DEFAULTS['voc_val'])
    p.add_argument('--duts-train', type=int, default=DEFAULTS['duts_train'])
    p.add_argument('--duts-test', type=int, default=DEFAULTS['duts_test'])
    p.add_argument('--size', type=int, default=DEFAULTS['size'], help='square image side (px)')
    p.add_argument('--seed', type=int, default=DEFAULTS['seed'])
    p.add_argument('--only', choices=DATASETS, default=None, help='generate this dataset alone')
    p.add_argument('--cityscapes', action='store_true', help='also generate the small Cityscapes copy')
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    generate_demo_data(args.out, voc_train=args.voc_train, voc_val=args.voc_val, duts_train=args.duts_train,
                       duts_test=args.duts_test, size=args.size, seed=args.seed, only=args.only,
                       cityscapes=args.cityscapes, verbose=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
