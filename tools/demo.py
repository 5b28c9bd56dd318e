"""calibseg's demo: train small segmentors on the embedded demo data, analyse their calibration, compare them.

    python tools/demo.py [--data-root data/demo] [--calib-root data/demo_calib] [--work-dir work_dirs/demo]
        [--configs A.py B.py ...] [--max-iters N] [--skip-train] [--verbose]

Generates the demo data (and the calibration images) if absent, trains each config in this process
(:func:`calibseg.apis.train`; one progress line per run and its validation result on the console, mmengine's full
log in the run's work directory), then analyses each final checkpoint with :func:`calibseg.apis.analyze_calibration`
on the demo val split, temperature scaling fitted on the separate calibration images (``calib_dataloader``). Prints
a table of accuracy and calibration: each model raw, and the first one (cross-entropy) after TS (also written to
``<work-dir>/results.md``); each analysis report is ``<work-dir>/<run>/analysis/report.md``. Deterministic: a fixed
thread count and deterministic algorithms, so the figures repeat bit for bit on the same kind of machine.
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import time
from typing import Dict, Sequence

from calibseg.apis.experiment import (
    DEFAULT_ROWS,
    REPO_ROOT,
    demo_data_options,
    ensure_demo_data,
    latest_checkpoint,
    markdown_table,
    method_name,
    reproducible,
    run_name,
    train,
)

DEFAULT_CONFIGS = (
    'configs/baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py',
    'configs/label_smoothing/fcn_r18-d16_ls_1xb8-600it_demo-voc12aug-96x96.py',
)
# the table's rows: calibseg's defaults with UE_15 beside OE_15 and the fitted temperature
_UE = ('UE_15', 'UE_15 (%)', '{:.2f}')
ROWS = tuple(x for row in DEFAULT_ROWS for x in ((row, _UE) if row[0] == 'OE_15' else (row,))) + (
    ('T', 'temperature T (TS)', '{:.3f}'),)


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--data-root', default='data/demo', help='demo data (generated if absent)')
    parser.add_argument('--calib-root', default='data/demo_calib',
                        help='calibration images for TS (generated if absent, as for tools/posthoc_demo.py)')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--configs', nargs='+', default=list(DEFAULT_CONFIGS))
    parser.add_argument('--max-iters', type=int, default=None, help='override the schedule (quick checks)')
    parser.add_argument('--skip-train', action='store_true', help='reuse the checkpoints of a previous demo')
    parser.add_argument('--verbose', action='store_true', help="mmengine's full logs on the console too")
    return parser.parse_args(argv)


def analysis_options(config: str, opts: Sequence[str], calib_root: str) -> Dict[str, object]:
    """The run's data options plus a ``calib_dataloader`` over the calibration images (the test loader's pipeline)."""
    from mmengine.config import Config

    from calibseg.apis.runs import parse_cfg_options

    options = parse_cfg_options(opts)
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(options)
    calib = copy.deepcopy(cfg.test_dataloader)
    calib.dataset.data_root = osp.join(calib_root, 'VOCdevkit', 'VOC2012')
    return dict(options, calib_dataloader=calib.to_dict())


def analyse(config: str, work_dir: str, opts: Sequence[str], calib_root: str, *, verbose: bool) -> Dict:
    """Analyse the run's newest checkpoint with TS into ``<work_dir>/analysis`` (the demo's own output: replaced)."""
    import logging

    from mmengine.logging import MMLogger

    from calibseg.apis import analyze_calibration

    logger = MMLogger.get_current_instance()
    level = logger.level
    if not verbose:  # mmengine's INFO lines (checkpoint loading) stay off the console
        logger.setLevel(logging.WARNING)
    try:
        return analyze_calibration(config, latest_checkpoint(work_dir), out_dir=osp.join(work_dir, 'analysis'),
                                   cfg_options=analysis_options(config, opts, calib_root), calibrators=['ts'],
                                   worst_k=4, force=True, verbose=verbose)
    finally:
        logger.setLevel(level)


def main(argv: Sequence[str] = None) -> None:
    from calibseg.apis.posthoc_demo import ensure_calibration_images
    from calibseg.apis.quiet import filter_known_noise

    args = parse_args(argv)
    start = time.time()
    if not args.verbose:
        filter_known_noise()
    if ensure_demo_data(args.data_root, datasets=('voc',)):
        print(f'[demo] generated the demo data in {args.data_root}', flush=True)
    ensure_calibration_images(args.calib_root)
    opts = demo_data_options(args.data_root, args.max_iters) + reproducible()
    quiet = not args.verbose
    results: Dict[str, Dict[str, float]] = {}
    reports = []
    for n, config in enumerate(args.configs):
        config = config if osp.isfile(config) else osp.join(REPO_ROOT, config)
        work_dir = osp.join(args.work_dir, run_name(config))
        if not args.skip_train:
            train(config, work_dir, opts, quiet=quiet)
        analysis = analyse(config, work_dir, opts, args.calib_root, verbose=args.verbose)
        name = method_name(config)
        results[name] = analysis['methods']['uncalibrated']['headline']
        if n == 0:  # the cross-entropy model after temperature scaling
            results[f'{name} + TS'] = dict(analysis['methods']['ts']['headline'],
                                           T=analysis['calibrators']['ts']['temperature'])
        reports.append((name, osp.join(work_dir, 'analysis', 'report.md')))
    table = markdown_table(results, ROWS)
    os.makedirs(args.work_dir, exist_ok=True)
    out = osp.join(args.work_dir, 'results.md')
    with open(out, 'w') as f:
        f.write('# calibseg demo: accuracy and calibration on the embedded demo data\n\nval split, every pixel '
                'pooled; calibration errors in percent; TS fitted on the calibration images '
                f'({args.calib_root}).\n\n' + table + '\n\nConfigs: ' + ', '.join(args.configs) + '\n')
    print('\n' + table + '\n')
    print(f'[demo] table: {out}')
    for name, report in reports:
        print(f'[demo] calibration report of {name}: {report}')
    print(f'[demo] total {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
