"""Evaluate one checkpoint on every saliency test set of a config (``tools/test_saliency.py``).

The test sets are the config's ``saliency_test_sets`` (a dict ``name -> dataset config``, e.g. DUTS-TE, ECSSD,
HKU-IS, PASCAL-S, DUT-OMRON and SOD in ``configs/_base_/datasets/duts_384x384.py``); each is evaluated with the
config's ``test_dataloader`` settings (batch size, workers, sampler) and ``test_evaluator`` (SaliencyMetric +
BinaryCalibrationMetric), the model and checkpoint loaded once. A set whose folders are missing is skipped (the
missing paths named) and the others proceed; a set that fails to load (e.g. unpaired files) is reported and the
others proceed too.
"""
from __future__ import annotations

import copy
import json
import os
import os.path as osp
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from mmengine.config import Config

from ..compat import trusted
from ..utils.run_setup import check_data_paths, load_run_config
from .runs import Options, build_runner, parse_cfg_options, test_only

__all__ = ['SaliencyResults', 'evaluate_saliency_sets', 'write_saliency_results', 'select_test_sets', 'missing_paths',
           'format_block', 'summary_table', 'COLUMNS']

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


@dataclass
class SaliencyResults:
    """What :func:`evaluate_saliency_sets` found: per evaluated set ``(images, metrics)``, the skipped sets with
    their missing paths, the failed sets with the error, the Markdown summary and the run's work directory."""

    results: Dict[str, Tuple[int, Dict[str, float]]] = field(default_factory=dict)
    skipped: Dict[str, List[str]] = field(default_factory=dict)
    failed: Dict[str, str] = field(default_factory=dict)
    table: str = ''
    work_dir: str = ''

    @property
    def ok(self) -> bool:
        """At least one set evaluated and none failed (missing sets are only reported)."""
        return bool(self.results) and not self.failed


def select_test_sets(cfg: Config, names: Optional[Sequence[str]], data_root: Optional[str]) -> Dict[str, dict]:
    """The config's test sets (in config order), optionally filtered by name and moved under ``data_root``
    (``data/ECSSD`` -> ``<data_root>/ECSSD``)."""
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
    try:
        check_data_paths(Config(dict(test_dataloader=dict(dataset=dataset))))
    except FileNotFoundError as err:
        return [line.strip().split(': ', 1)[-1] for line in str(err).splitlines()[1:] if line.startswith('  ')]
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


def evaluate_saliency_sets(config: Union[str, Config], checkpoint: str, *, datasets: Optional[Sequence[str]] = None,
                           data_root: Optional[str] = None, work_dir: Optional[str] = None,
                           cfg_options: Options = None, weights_only: bool = False, launcher: str = 'none',
                           echo=print) -> SaliencyResults:
    """Evaluate ``checkpoint`` on each of the config's saliency test sets with mmengine's test loop.

    Args:
        config: a config file (or Config) with a ``saliency_test_sets`` dict.
        checkpoint: loaded once, as a trusted file unless ``weights_only``.
        datasets: names of the sets to evaluate (default: all, in config order).
        data_root: read every set from ``<data_root>/<folder name of its data_root>``.
        work_dir, cfg_options, launcher: as in :func:`calibseg.apis.test`.
        echo: where progress messages go (skipped / failed sets and, on the main process, each set's block).

    Returns:
        :class:`SaliencyResults`; the metrics of a set drop the set's name prefix.
    """
    from mmengine.dist import is_main_process
    from mmengine.runner import TestLoop

    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    cfg = load_run_config(config, work_dir=work_dir, cfg_options=parse_cfg_options(cfg_options),
                          launcher=launcher, loaders=())
    out = SaliencyResults(work_dir=cfg.work_dir)
    available: Dict[str, dict] = {}
    for name, ds in select_test_sets(cfg, datasets, data_root).items():
        missing = missing_paths(ds)
        if missing:
            out.skipped[name] = missing
            echo(f'[test_saliency] {name}: skipped, data missing: {", ".join(missing)}')
        else:
            available[name] = ds
    if available:
        evaluator_cfg = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        loader_template = copy.deepcopy(cfg.test_dataloader)
        test_only(cfg)
        cfg.resume = False
        cfg.test_dataloader.dataset = next(iter(available.values()))
        cfg.load_from = checkpoint if weights_only else trusted(checkpoint)
        runner = build_runner(cfg)
        for name, ds in available.items():
            loader_cfg = copy.deepcopy(loader_template)
            loader_cfg['dataset'] = ds
            # the set's name as the metrics' prefix keeps the reliability files of the sets apart
            evaluators = [dict(copy.deepcopy(e), prefix=name) for e in evaluator_cfg]
            try:
                loop = TestLoop(runner, loader_cfg, evaluators)
            except (ValueError, FileNotFoundError, KeyError) as err:
                out.failed[name] = f'{type(err).__name__}: {err}'.splitlines()[0]
                echo(f'[test_saliency] {name}: failed to load: {err}')
                continue
            runner._test_loop = loop  # mmengine has no public setter; Runner.test() runs the loop as it is
            metrics = runner.test()
            prefix = f'{name}/'
            metrics = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in metrics.items()}
            out.results[name] = (len(loop.dataloader.dataset), metrics)
            if is_main_process():
                echo(format_block(name, out.results[name][0], metrics))
    out.table = summary_table(out.results, out.skipped, out.failed, config=str(cfg.filename or config),
                              checkpoint=checkpoint)
    return out


def write_saliency_results(out: SaliencyResults, path: str) -> None:
    """The summary table to ``path`` (Markdown) and every metric to ``<path stem>.json``, each written atomically."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    payload = json.dumps(dict(results={n: dict(images=c, **m) for n, (c, m) in out.results.items()},
                              skipped=out.skipped, failed=out.failed), indent=1)
    for target, text in ((path, out.table + '\n'), (osp.splitext(path)[0] + '.json', payload)):
        fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(target)), suffix='.tmp')
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
