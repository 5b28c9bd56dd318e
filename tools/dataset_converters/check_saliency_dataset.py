#!/usr/bin/env python
"""Check a downloaded saliency dataset, and optionally write the ``<DS>/Image`` + ``<DS>/Mask`` repack.

    python tools/dataset_converters/check_saliency_dataset.py DATASET_ROOT \\
        --layout {duts-tr,duts-te,ecssd,hku-is,pascal-s,dut-omron,sod,repack} [--repack OUT] [--name DS] [--force]

``DATASET_ROOT`` is what the matching calibseg dataset takes as ``data_root`` (for DUTS: the folder that
holds ``DUTS-TR/`` and ``DUTS-TE/``); the layouts are the datasets' defaults
(:data:`calibseg.datasets.saliency.SALIENCY_LAYOUTS`). Every image and mask is decoded fully; reported, with
file names: unpaired files, image/mask size mismatches, soft masks (more than ``--soft-tolerance`` of the
pixels neither 0 nor 255), masks that binarising at ``> 128`` would empty (0/1, 0/100 label maps), and
truncated or corrupt files. The exit status is 1 when a problem was found, else 0.

``--repack OUT`` writes ``OUT/<DS>/Image/<stem>.<ext>`` (image bytes copied unchanged) and
``OUT/<DS>/Mask/<stem>.png`` (8-bit grayscale, values unchanged) for every pair that decodes and whose sizes
match; each file is written under a temporary name and renamed. An existing non-empty ``OUT/<DS>`` is refused
unless ``--force``. ``<DS>`` is ``--name`` or the layout's dataset name (``DUTS-TR``, ``ECSSD``, ...).
The logic lives in :mod:`calibseg.datasets.saliency_check`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from calibseg.datasets.saliency import SALIENCY_LAYOUTS
from calibseg.datasets.saliency_check import SOFT_TOLERANCE, check_saliency_dataset, repack_saliency_dataset


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', metavar='DATASET_ROOT', help='dataset root (the dataset\'s data_root)')
    parser.add_argument('--layout', required=True, choices=sorted(SALIENCY_LAYOUTS), help='on-disk layout')
    parser.add_argument('--repack', metavar='OUT', default=None, help='write OUT/<DS>/Image + OUT/<DS>/Mask')
    parser.add_argument('--name', default=None, help='<DS> folder name of the repack (default: the layout\'s)')
    parser.add_argument('--force', action='store_true', help='repack into an existing non-empty OUT/<DS>')
    parser.add_argument('--soft-tolerance', type=float, default=SOFT_TOLERANCE,
                        help='largest accepted fraction of mask pixels neither 0 nor 255 (default 0.05)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = check_saliency_dataset(args.root, args.layout, soft_tolerance=args.soft_tolerance)
    print(report.summary(), flush=True)
    if args.repack and report.pairs:
        try:
            target = repack_saliency_dataset(report, args.repack, name=args.name, force=args.force)
        except ValueError as err:
            print(f'error: {err}', file=sys.stderr, flush=True)
            return 2
        print(f'repacked {len(report.pairs) - len(report.broken())} pair(s) to {target}', flush=True)
    return 0 if report.ok else 1


if __name__ == '__main__':
    sys.exit(main())
