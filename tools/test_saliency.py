"""Evaluate one checkpoint on every saliency test set of a config: one block per set, then a summary table.

    python tools/test_saliency.py CONFIG CHECKPOINT [--datasets DUTS-TE ECSSD ...] [--data-root DIR]
        [--work-dir DIR] [--out FILE] [--weights-only] [--cfg-options k=v ...]
    python -m torch.distributed.run --nproc_per_node N tools/test_saliency.py ... --launcher pytorch

The test sets are the config's ``saliency_test_sets`` (a dict ``name -> dataset config``, e.g. DUTS-TE, ECSSD,
HKU-IS, PASCAL-S, DUT-OMRON and SOD in ``configs/_base_/datasets/duts_384x384.py``); each is evaluated with the
config's ``test_dataloader`` settings (batch size, workers, sampler) and ``test_evaluator`` (SaliencyMetric +
BinaryCalibrationMetric), the model and checkpoint loaded once. ``--data-root DIR`` reads every set from
``DIR/<folder name of its data_root>`` (``data/ECSSD`` -> ``DIR/ECSSD``). A set whose folders are missing is
skipped with a message naming the missing paths, and the others proceed; a set that fails to load (e.g. unpaired
files) is reported and the others proceed too. The summary (Markdown) is printed and written to ``--out``
(default ``<work_dir>/saliency_results.md``, with every metric in ``saliency_results.json`` beside it).

Exit status: 0 when at least one set was evaluated and none failed (missing sets are only reported), else 1.
The checkpoint is loaded as a trusted file (see tools/test.py) unless ``--weights-only``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction
from mmengine.dist import is_main_process

# (result key, column title, format): saliency accuracy on the raw probabilities, then calibration in percent
COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    ('MAE', 'MAE', '{:.4f}'),
    ('maxF', 'max-F', '{:.4f}'),
    ('meanF', 'mean-F', '{:.4f}'),
    ('Sm', 'S-measure', '{:.4f}'),
    ('meanEm', 'mean-E', '{:.4f}'),
    ('maxEm', 'max-E', '{:.4f}'),
    ('ECE', 'ECE (%)', '{:.2f}'),
    ('OE_10', 'OE (%)', '{:.2f}'),
)
EXTRA_KEYS = ('UE_10', 'NLL', 'Brier', 'Acc')  # also printed per set


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file with a `saliency_test_sets` dict')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--datasets', nargs='+', help='names of the test sets to evaluate (default: all)')
    parser.add_argument('--data-root', help='read every test set from DATA_ROOT/<folder name of its data_root>')
    parser.add_argument('--work-dir', help='the dir for logs and reliability diagrams (default work_dirs/<config>)')
    parser.add_argument('--out', help='Markdown summary file (default <work_dir>/saliency_results.md)')
    parser.add_argument('--weights-only', action='store_true',
                        help="load the checkpoint with torch's safe loader (weights_only=True)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args(argv)


def select_test_sets(cfg: Config, names: Optional[Sequence[str]], data_root: Optional[str]) -> Dict[str, dict]:
    """The config's test sets (in config order), optionally filtered by name and moved under ``data_root``."""
    sets = cfg.get('saliency_test_sets')
    if not sets:
        raise ValueError(f'{cfg.filename}: no `saliency_test_sets` in the config (a dict name -> dataset config, '
                         "see configs/_base_/datasets/duts_384x384.py)")
    sets = {str(name): copy.deepcopy(dict(ds)) for name, ds in sets.items()}
    if names:
        unknown = [n for n in names if n not in sets]
        if unknown:
            raise ValueError(f'unknown test set(s) {unknown}; the config has {list(sets)}')
        sets = {n: sets[n] for n in names}
    if data_root:
        for ds in sets.values():
            old = ds.get('data_root')
            ds['data_root'] = osp.join(data_root, osp.basename(osp.normpath(old))) if old else data_root
    return sets


def missing_paths(dataset: Dict[str, Any]) -> List[str]:
    """Folders and files a dataset config names that do not exist (empty when all exist)."""
    from calibseg.utils.run_setup import check_data_paths

    try:
        check_data_paths(Config(dict(test_dataloader=dict(dataset=dataset))))
    except FileNotFoundError as err:
        return [line.strip().split(': ', 1)[-1] for line in str(err).splitlines()[1:]
                if line.startswith('  ')]
    return []


def format_block(name: str, num_images: int, metrics: Dict[str, float]) -> str:
    """One test set's headline metrics (every key goes to the JSON file)."""
    lines = [f'==================== {name} ({num_images} images) ====================']
    keys = [k for k, _, _ in COLUMNS] + list(EXTRA_KEYS)
    lines += [f'  {k:<8} {float(metrics[k]):.6g}' for k in keys if k in metrics]
    return '\n'.join(lines)


def summary_table(results: Dict[str, Tuple[int, Dict[str, float]]], skipped: Dict[str, List[str]],
                  failed: Dict[str, str], *, config: str, checkpoint: str) -> str:
    """Markdown: one row per evaluated set, then the skipped and failed sets."""
    lines = [f'Config `{osp.basename(config)}`, checkpoint `{osp.basename(checkpoint)}`; saliency measures on the '
             'raw probabilities, calibration (10 equal-width bins on max(p, 1-p)) pooled over all pixels.', '',
             '| test set | images | ' + ' | '.join(title for _, title, _ in COLUMNS) + ' |',
             '|---|---:|' + '---:|' * len(COLUMNS)]
    for name, (count, metrics) in results.items():
        cells = ['-' if metrics.get(k) is None else fmt.format(float(metrics[k])) for k, _, fmt in COLUMNS]
        lines.append(f'| {name} | {count} | ' + ' | '.join(cells) + ' |')
    if skipped:
        lines += ['', 'Skipped (data missing): ' + '; '.join(f'{n} ({", ".join(p)})' for n, p in skipped.items())]
    if failed:
        lines += ['', 'Failed: ' + '; '.join(f'{n}: {e}' for n, e in failed.items())]
    return '\n'.join(lines)


def build_runner(cfg: Config, first_set: dict, checkpoint: str, weights_only: bool, launcher: str):
    """A Runner for testing only (no training or validation parts), its checkpoint set."""
    from mmengine.runner import Runner

    from calibseg.compat import setup_distributed, trusted

    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler', 'val_dataloader', 'val_cfg',
                'val_evaluator'):
        cfg[key] = None
    cfg.resume = False
    cfg.test_dataloader.dataset = first_set
    cfg.load_from = checkpoint if weights_only else trusted(checkpoint)
    setup_distributed(cfg, launcher)
    return Runner.from_cfg(cfg)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join('./work_dirs', osp.splitext(
        osp.basename(args.config))[0])
    sets = select_test_sets(cfg, args.datasets, args.data_root)

    skipped: Dict[str, List[str]] = {}
    available: Dict[str, dict] = {}
    for name, ds in sets.items():
        missing = missing_paths(ds)
        if missing:
            skipped[name] = missing
            print(f'[test_saliency] {name}: skipped, data missing: {", ".join(missing)}', flush=True)
        else:
            available[name] = ds
    results: Dict[str, Tuple[int, Dict[str, float]]] = {}
    failed: Dict[str, str] = {}
    if available:
        from mmengine.runner import TestLoop

        evaluator_cfg = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        loader_template = copy.deepcopy(cfg.test_dataloader)
        runner = build_runner(cfg, next(iter(available.values())), args.checkpoint, args.weights_only, args.launcher)
        for name, ds in available.items():
            loader_cfg = copy.deepcopy(loader_template)
            loader_cfg['dataset'] = ds
            # the set's name as the metrics' prefix keeps the reliability files of the sets apart
            evaluators = [dict(copy.deepcopy(e), prefix=name) for e in evaluator_cfg]
            try:
                loop = TestLoop(runner, loader_cfg, evaluators)
            except (ValueError, FileNotFoundError, KeyError) as err:
                failed[name] = f'{type(err).__name__}: {err}'.splitlines()[0]
                print(f'[test_saliency] {name}: failed to load: {err}', flush=True)
                continue
            runner._test_loop = loop  # mmengine has no public setter; Runner.test() runs the loop as it is
            metrics = runner.test()
            prefix = f'{name}/'
            metrics = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in metrics.items()}
            results[name] = (len(loop.dataloader.dataset), metrics)
            if is_main_process():
                print(format_block(name, results[name][0], metrics), flush=True)

    table = summary_table(results, skipped, failed, config=args.config, checkpoint=args.checkpoint)
    if is_main_process():
        out = args.out or osp.join(cfg.work_dir, 'saliency_results.md')
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        with open(out, 'w') as f:
            f.write(table + '\n')
        with open(osp.splitext(out)[0] + '.json', 'w') as f:
            json.dump(dict(results={n: dict(images=c, **m) for n, (c, m) in results.items()}, skipped=skipped,
                           failed=failed), f, indent=1)
        print('\n' + table, flush=True)
        print(f'\n[test_saliency] summary written to {out}', flush=True)
    if not results:
        print('[test_saliency] no test set was evaluated', file=sys.stderr, flush=True)
    return 0 if results and not failed else 1


if __name__ == '__main__':
    sys.exit(main())
