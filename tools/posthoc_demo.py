"""Post-hoc calibration of demo models: fit TS, CTS, VS and LTS and compare them on held-out images.

    python tools/posthoc_demo.py [--checkpoints CKPT ...] [--protocols generated val-half]
        [--methods ts cts vs lts] [--data-root data/demo] [--calib-root data/demo_calib]
        [--work-dir work_dirs/posthoc_demo] [--no-write]

Models, protocols and what is measured: see :mod:`calibseg.apis.posthoc_demo`. The tables go between the results
markers of ``configs/posthoc/README.md`` (``--no-write``: print them only).
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Sequence

from calibseg.apis.posthoc_demo import CALIB_IMAGES, CALIB_SEED, NAMES, PROTOCOLS, run_posthoc_demo


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--checkpoints', nargs='+', default=None,
                        help='demo FCN checkpoints (trusted: written by our own runs); default: the CE and focal '
                             'runs of tools/compare_methods.py')
    parser.add_argument('--protocols', nargs='+', choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument('--methods', nargs='+', choices=sorted(NAMES), default=['ts', 'cts', 'vs', 'lts'])
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--calib-root', default='data/demo_calib',
                        help=f'calibration images ({CALIB_IMAGES} generated with seed {CALIB_SEED} if missing)')
    parser.add_argument('--work-dir', default='work_dirs/posthoc_demo')
    parser.add_argument('--no-write', action='store_true', help='print the tables only')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    import calibseg  # noqa: F401  (registers calibseg's modules)

    return run_posthoc_demo(args.checkpoints, protocols=args.protocols, methods=args.methods,
                            data_root=args.data_root, calib_root=args.calib_root, work_dir=args.work_dir,
                            write=not args.no_write)


if __name__ == '__main__':
    main()
