"""calibseg's demo: train small segmentors on the embedded demo data, evaluate them, compare side by side.

    python tools/demo.py [--data-root data/demo] [--work-dir work_dirs/demo] [--configs A.py B.py ...]

Generates the demo data if absent, trains each config with mmengine's Runner (``tools/train.py`` in a child
process, so its progress log streams to the terminal), tests the final checkpoint (``tools/test.py``'s code path,
in this process) and prints/writes a table of accuracy and calibration (``<work-dir>/results.md``), with
reliability diagrams in each run's work directory.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIGS = (
    'configs/baseline/fcn_r18-os16_ce_600it_demo-voc12aug-96x96.py',
    'configs/mbls/fcn_r18-os16_mbls_600it_demo-voc12aug-96x96.py',
)
# (result key, column title, scale, format); keys missing from a run's results are shown as '-'.
TABLE_ROWS = (
    ('mIoU', 'mIoU (%)', 1.0, '{:.2f}'),
    ('aAcc', 'pixel acc (%)', 1.0, '{:.2f}'),
    ('ECE', 'ECE_15 (%)', 1.0, '{:.2f}'),
    ('ECE_em_15', 'ECE_em_15 (%)', 1.0, '{:.2f}'),
    ('cwCE_15', 'cwCE_15 (%)', 1.0, '{:.3f}'),
    ('MCE_15', 'MCE_15 (%)', 1.0, '{:.2f}'),
    ('OE_15', 'OE_15 (%)', 1.0, '{:.2f}'),
    ('NLL', 'NLL', 1.0, '{:.4f}'),
    ('Brier', 'Brier', 1.0, '{:.4f}'),
)


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--data-root', default='data/demo', help='where the demo data lives (generated if absent)')
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--configs', nargs='+', default=list(DEFAULT_CONFIGS))
    parser.add_argument('--max-iters', type=int, default=None, help='override the schedule (quick checks)')
    parser.add_argument('--skip-train', action='store_true', help='reuse the checkpoints of a previous demo')
    return parser.parse_args(argv)


def ensure_data(data_root: str) -> None:
    """Generate the embedded demo data unless it is already there."""
    marker = osp.join(data_root, 'VOCdevkit', 'VOC2012', 'ImageSets', 'Segmentation', 'val.txt')
    if osp.isfile(marker):
        print(f'[demo] demo data found in {data_root}')
        return
    print(f'[demo] generating the demo data in {data_root}')
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'dataset_converters', 'generate_demo_data.py'),
                    '--out', data_root], check=True)


def run_name(config: str) -> str:
    return osp.splitext(osp.basename(config))[0]


def cfg_overrides(args: argparse.Namespace) -> List[str]:
    """--cfg-options that point every dataset at ``--data-root`` (and shorten the schedule if asked)."""
    voc = osp.join(args.data_root, 'VOCdevkit', 'VOC2012')
    opts = [f'train_dataloader.dataset.datasets.0.data_root={voc}',
            f'train_dataloader.dataset.datasets.1.data_root={voc}',
            f'val_dataloader.dataset.data_root={voc}', f'test_dataloader.dataset.data_root={voc}']
    if args.max_iters:
        opts += [f'train_cfg.max_iters={args.max_iters}', f'train_cfg.val_interval={args.max_iters}',
                 f'default_hooks.checkpoint.interval={args.max_iters}',
                 f'param_scheduler.0.end={args.max_iters}']
    return opts


def train(config: str, work_dir: str, opts: List[str]) -> None:
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
           '--cfg-options', *opts]
    print(f'[demo] training {run_name(config)} -> {work_dir}', flush=True)
    subprocess.run(cmd, check=True, cwd=os.getcwd())


def test(config: str, work_dir: str, opts: List[str]) -> Dict[str, float]:
    from mmengine.config import DictAction
    from mmengine.runner import Runner, find_latest_checkpoint

    from calibseg.compat import trusted
    from calibseg.utils import load_run_config

    ckpt = find_latest_checkpoint(work_dir)
    if ckpt is None:
        raise FileNotFoundError(f'no checkpoint in {work_dir}: train first (drop --skip-train)')
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    cfg = load_run_config(config, work_dir=work_dir, cfg_options=parser.parse_args(['--o', *opts]).o)
    cfg.load_from = trusted(ckpt)  # written by our own training run above
    return Runner.from_cfg(cfg).test()


def format_table(results: Dict[str, Dict[str, float]]) -> str:
    names = list(results)
    lines = ['| metric | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
    for key, title, scale, fmt in TABLE_ROWS:
        cells = []
        for name in names:
            value = results[name].get(key)
            cells.append('-' if value is None else fmt.format(float(value) * scale))
        lines.append(f'| {title} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Sequence[str] = None) -> None:
    args = parse_args(argv)
    start = time.time()
    ensure_data(args.data_root)
    opts = cfg_overrides(args)
    results: Dict[str, Dict[str, float]] = {}
    for config in args.configs:
        config = config if osp.isfile(config) else osp.join(ROOT, config)
        work_dir = osp.join(args.work_dir, run_name(config))
        if not args.skip_train:
            train(config, work_dir, opts)
        results[run_name(config).split('_')[2]] = test(config, work_dir, opts)
    table = format_table(results)
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write('# calibseg demo: accuracy and calibration on the embedded demo data (val split, pooled '
                'over pixels)\n\n' + table + '\n\nRuns: ' + ', '.join(args.configs) + '\n')
    print('\n' + table)
    print(f'\n[demo] table written to {osp.join(args.work_dir, "results.md")}; reliability diagrams in each '
          f'run\'s work dir; total {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
