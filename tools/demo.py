"""calibseg's demo: train small segmentors on the embedded demo data, evaluate them, compare side by side.

    python tools/demo.py [--data-root data/demo] [--work-dir work_dirs/demo] [--configs A.py B.py ...]

Generates the demo data if absent, trains each config with mmengine's Runner (``tools/train.py`` in a child
process, its progress log streaming to the terminal), tests the final checkpoint in this process and prints a
table of accuracy and calibration (also written to ``<work-dir>/results.md``); the reliability diagrams are in
each run's work directory.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, Sequence

from calibseg.apis.experiment import (
    REPO_ROOT,
    demo_data_options,
    markdown_table,
    method_name,
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
    return parser.parse_args(argv)


def ensure_data(data_root: str) -> None:
    """Generate the embedded demo data unless it is already there."""
    if osp.isfile(osp.join(data_root, 'VOCdevkit', 'VOC2012', 'ImageSets', 'Segmentation', 'val.txt')):
        print(f'[demo] demo data found in {data_root}')
        return
    print(f'[demo] generating the demo data in {data_root}', flush=True)
    subprocess.run([sys.executable, osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'generate_demo_data.py'),
                    '--out', data_root], check=True)


def main(argv: Sequence[str] = None) -> None:
    args = parse_args(argv)
    start = time.time()
    ensure_data(args.data_root)
    opts = demo_data_options(args.data_root, args.max_iters)
    results: Dict[str, Dict[str, float]] = {}
    for config in args.configs:
        config = config if osp.isfile(config) else osp.join(REPO_ROOT, config)
        work_dir = osp.join(args.work_dir, run_name(config))
        if not args.skip_train:
            train(config, work_dir, opts)
        results[method_name(config)] = test_latest(config, work_dir, opts)
    table = markdown_table(results)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write('# calibseg demo: accuracy and calibration on the embedded demo data\n\nval split, every pixel '
                'pooled; calibration errors in percent.\n\n' + table + '\n\nConfigs: '
                + ', '.join(args.configs) + '\n')
    print('\n' + table)
    print(f'\n[demo] table written to {osp.join(args.work_dir, "results.md")}; reliability diagrams under '
          f'{args.work_dir}/<run>/<timestamp>/reliability/; total {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
