"""calibseg's demo: train small segmentors on the embedded demo data, evaluate them, compare side by side.

    python tools/demo.py [--data-root data/demo] [--work-dir work_dirs/demo] [--configs A.py B.py ...]
        [--max-iters N] [--skip-train] [--verbose]

Generates the demo data if absent, trains each config in this process (:func:`calibseg.apis.train`; one progress
line per run and its validation result on the console, mmengine's full log in the run's work directory), tests the
final checkpoint and prints a table of accuracy and calibration (also written to ``<work-dir>/results.md``); the
reliability diagrams are in each run's work directory. Deterministic: a fixed thread count and deterministic
algorithms, so the figures repeat bit for bit on the same kind of machine.
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import time
from typing import Dict, Sequence

from calibseg.apis.experiment import (
    REPO_ROOT,
    demo_data_options,
    ensure_demo_data,
    markdown_table,
    method_name,
    reproducible,
    run_name,
    test_latest,
    train,
)

DEFAULT_CONFIGS = (
    'configs/baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py',
    'configs/mbls/fcn_r18-d16_mbls_1xb8-600it_demo-voc12aug-96x96.py',
)


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--data-root', default='data/demo', help='demo data (generated if absent)')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--configs', nargs='+', default=list(DEFAULT_CONFIGS))
    parser.add_argument('--max-iters', type=int, default=None, help='override the schedule (quick checks)')
    parser.add_argument('--skip-train', action='store_true', help='reuse the checkpoints of a previous demo')
    parser.add_argument('--verbose', action='store_true', help="mmengine's full logs on the console too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] = None) -> None:
    args = parse_args(argv)
    start = time.time()
    if ensure_demo_data(args.data_root, datasets=('voc',)):
        print(f'[demo] generated the demo data in {args.data_root}', flush=True)
    opts = demo_data_options(args.data_root, args.max_iters) + reproducible()
    quiet = not args.verbose
    results: Dict[str, Dict[str, float]] = {}
    for config in args.configs:
        config = config if osp.isfile(config) else osp.join(REPO_ROOT, config)
        work_dir = osp.join(args.work_dir, run_name(config))
        if not args.skip_train:
            train(config, work_dir, opts, quiet=quiet)
        results[method_name(config)] = test_latest(config, work_dir, opts, quiet=quiet)
    table = markdown_table(results)
    os.makedirs(args.work_dir, exist_ok=True)
    out = osp.join(args.work_dir, 'results.md')
    with open(out, 'w') as f:
        f.write('# calibseg demo: accuracy and calibration on the embedded demo data\n\nval split, every pixel '
                'pooled; calibration errors in percent.\n\n' + table + '\n\nConfigs: '
                + ', '.join(args.configs) + '\n')
    print('\n' + table + '\n')
    print(f'[demo] table: {out}')
    for config in args.configs:
        diagrams = sorted(glob.glob(osp.join(args.work_dir, run_name(config), '*', 'reliability')))
        if diagrams:
            print(f'[demo] reliability diagrams of {method_name(config)}: {diagrams[-1]}')
    print(f'[demo] total {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
