"""Train every demo config under the same budget, evaluate them, and write the comparison into the READMEs.

    python tools/compare_methods.py [--data-root data/demo] [--work-dir work_dirs/compare] [--reuse]

Writes the table (methods as columns) between the results markers of each method's ``configs/<method>/README.md``
(its own column in bold) and of ``docs/demo_comparison.md``. ``--reuse`` skips training runs whose final
checkpoint already exists. Same data, schedule (600 iterations, batch 8), model and seed for every method. Every run
is trained first (:func:`calibseg.study.demo.train_compare_runs`, as the demo study trains them), then tested.
"""
from __future__ import annotations

import argparse
import os.path as osp
import platform
import time
from typing import Dict, Sequence

import torch

from calibseg.apis.experiment import (
    REPO_ROOT,
    demo_data_options,
    ensure_demo_data,
    markdown_table,
    method_name,
    run_finished,
    run_name,
    test_latest,
    training_log_mean,
    write_marked_section,
)
from calibseg.datasets.demo import DEFAULTS
from calibseg.study.demo import COMPARE_WORK_DIR, DEMO_CONFIG, demo_recipes, train_compare_runs


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--work-dir', default=COMPARE_WORK_DIR)
    parser.add_argument('--configs', nargs='+', default=None,
                        help=f"default: every configs/<method>/{DEMO_CONFIG.format('*')} but configs/posthoc/'s")
    parser.add_argument('--reuse', action='store_true', help='do not retrain runs that finished')
    parser.add_argument('--no-write', action='store_true', help='print the table only')
    parser.add_argument('--verbose', action='store_true', help="mmengine's full logs on the console too")
    return parser.parse_args(argv)


def timing(seconds: float, reused: int, total: int) -> str:
    """What the run's wall time measured: training and testing, or only testing the runs ``--reuse`` found."""
    if reused == total:
        return f'all {total} runs reused from earlier trainings; testing took {seconds:.0f} s here'
    if reused:
        return f'{total - reused} runs trained and {total} tested in {seconds:.0f} s here; {reused} runs reused'
    return f'{seconds:.0f} s here'


def main(argv: Sequence[str] = None) -> None:
    args = parse_args(argv)
    # training methods only: configs/posthoc/ evaluates a trained model with a fitted calibrator (tools/posthoc_demo.py)
    configs = args.configs or demo_recipes(REPO_ROOT)
    configs = sorted(configs, key=lambda c: (method_name(c) != 'ce', method_name(c)))  # CE first
    ensure_demo_data(args.data_root, datasets=('voc',))
    reused = sum(run_finished(c, osp.join(args.work_dir, run_name(c))) for c in configs) if args.reuse else 0
    start = time.time()
    work_dirs = train_compare_runs(data_root=args.data_root, work_dir=args.work_dir, repo_root=REPO_ROOT,
                                   configs=configs, reuse=args.reuse, quiet=not args.verbose, tag='compare')
    results: Dict[str, Dict[str, float]] = {}
    for config, work_dir in zip(configs, work_dirs):
        results[method_name(config)] = test_latest(config, work_dir, demo_data_options(args.data_root, config=config),
                                                   quiet=not args.verbose)
        gamma = training_log_mean(work_dir, 'gamma_mean')  # γ-Net runs log the mean γ they train with
        if gamma is not None:
            results[method_name(config)]['gamma_mean'] = gamma
    data = f'seed 0: {DEFAULTS["voc_train"]} train+aug / {DEFAULTS["voc_val"]} val images of {DEFAULTS["size"]} px'
    note = (f'Embedded demo data (`tools/dataset_converters/generate_demo_data.py`, {data}), FCN ResNetV1c-18 OS16 '
            f'from scratch, 600 iterations of batch 8, seed 0, CPU ({platform.machine()}, torch {torch.__version__}); '
            f'val split, every pixel pooled; calibration errors in percent. Reproduce: '
            f'`python tools/compare_methods.py` ({timing(time.time() - start, reused, len(configs))}).\n\n')
    print(note + markdown_table(results))
    if args.no_write:
        return
    for config in configs:
        readme = osp.join(osp.dirname(config), 'README.md')
        write_marked_section(readme, note + markdown_table(results, highlight=method_name(config)))
    write_marked_section(osp.join(REPO_ROOT, 'docs', 'demo_comparison.md'), note + markdown_table(results))
    print('[compare] tables written into configs/<method>/README.md and docs/demo_comparison.md')


if __name__ == '__main__':
    main()
