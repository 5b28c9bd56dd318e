"""Which trained model (or model + post-hoc calibrator) stays calibrated under corruption shift?

:func:`compare_under_shift` runs the calibration analysis (:func:`calibseg.apis.analyze_calibration`, with its
corruption sweep) for each of several trained models into ``out_dir/<name>/`` and writes ``out_dir/comparison.md``,
``out_dir/comparison.json`` and figures of the headline keys against severity, one line per *method*: a model's
raw output is the line ``<name>``, each post-hoc calibrator fitted to it on clean data the line
``<name>+<calibrator>`` (``ce``, ``ce+ts``, ``ce+lts``, ``mbls``, ``focal``...). Each point is the mean over the
corruptions at that severity (:func:`calibseg.analysis.report.shift_means`); severity 0 is the clean test set.

Multi-class heads are compared by ``ECE_15`` and ``mIoU`` (tables also show ``OE_15``, ``NLL``, ``Brier``);
one-channel (saliency) heads by ``MAE``, ``maxF`` (max-F) and ``ECE_10``. The models must share the head type.

**Same images for every model.** When a calibrated model's calibrators are fitted on a held-out part of the test
set (``fit_split='auto'`` without a ``calib_dataloader`` / distinct ``val_dataloader``, or ``'heldout'``), that
model is evaluated on the rest; the uncalibrated models are then evaluated on the same rest
(``HeldOutSplit(part='train')`` with the same ``held_out`` and ``seed``), so every line counts the same pixels.
``comparison.json`` records whether the evaluated image lists were identical (``same_images``).

**Resuming**: ``resume=True`` passes ``resume`` to every analysis: finished (corruption, severity) cells whose
fingerprint matches (checkpoint bytes, config, protocol) are reused; the clean pass and the calibrator fits are
repeated (one pass over the clean test set per model).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from .report import shift_means

__all__ = ['ShiftEntry', 'compare_under_shift', 'entry_from_work_dir', 'comparison_table', 'write_comparison',
           'MULTICLASS_KEYS', 'BINARY_KEYS']

#: (key, title, digits, lower is better) of the comparison for multi-class heads; the first two get figures.
MULTICLASS_KEYS = (('ECE_15', 'ECE_15 (%)', 2, True), ('mIoU', 'mIoU (%)', 2, False),
                   ('OE_15', 'OE_15 (%)', 2, True), ('NLL', 'NLL', 4, True), ('Brier', 'Brier', 4, True))
#: the same for one-channel (saliency) heads; the first three get figures.
BINARY_KEYS = (('MAE', 'MAE', 4, True), ('maxF', 'max-F', 4, False), ('ECE_10', 'ECE_10 (%)', 2, True),
               ('ECE_15', 'ECE_15 (%)', 2, True), ('NLL', 'NLL', 4, True))
_FIGURES = {False: 2, True: 3}
_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]*$')
_OUTPUTS = ('comparison.md', 'comparison.json')


@dataclass(frozen=True)
class ShiftEntry:
    """One trained model of the comparison.

    Args:
        name: its line in the figures and its folder under ``out_dir`` (letters, digits, ``_ . -``).
        config: config file or ``mmseg::`` package config.
        checkpoint: its weights.
        calibrators: post-hoc methods fitted to it on clean data (``ts``, ``lts``...); each adds a line.
    """

    name: str
    config: str
    checkpoint: str
    calibrators: Tuple[str, ...] = field(default=())


def entry_from_work_dir(work_dir: str, *, name: Optional[str] = None, calibrators: Sequence[str] = ()) -> ShiftEntry:
    """An entry for an mmengine work dir: its newest own checkpoint and the config the Runner dumped into it.

    Raises:
        FileNotFoundError: no checkpoint, or no dumped config (``*.py``) in ``work_dir``.
        ValueError: several ``*.py`` files (the dumped config is ambiguous).
    """
    from ..apis.experiment import latest_checkpoint

    work_dir = osp.normpath(work_dir)
    checkpoint = latest_checkpoint(work_dir)
    configs = sorted(f for f in os.listdir(work_dir) if f.endswith('.py') and osp.isfile(osp.join(work_dir, f)))
    if not configs:
        raise FileNotFoundError(f'{work_dir}: no dumped config (*.py) in the work dir')
    if len(configs) > 1:
        raise ValueError(f'{work_dir}: several configs ({", ".join(configs)}); name one with --model instead')
    return ShiftEntry(name or osp.basename(work_dir), osp.join(work_dir, configs[0]), checkpoint,
                      tuple(calibrators))


def _check_entries(entries: Sequence[ShiftEntry]) -> List[ShiftEntry]:
    from ..calibrators.names import BINARY_CALIBRATOR_ALIASES, CALIBRATOR_ALIASES

    known = sorted(set(CALIBRATOR_ALIASES) | set(BINARY_CALIBRATOR_ALIASES))
    known_all = set(known) | set(CALIBRATOR_ALIASES.values()) | set(BINARY_CALIBRATOR_ALIASES.values())
    entries = list(entries)
    if not entries:
        raise ValueError('no model to compare')
    seen = set()
    for e in entries:
        if not isinstance(e, ShiftEntry):
            raise TypeError(f'entries must be ShiftEntry, got {type(e).__name__}')
        if not _NAME.match(e.name) or e.name == 'comparison':
            raise ValueError(f'model name {e.name!r}: use letters, digits, _ . - (it names a line and a folder)')
        if e.name in seen:
            raise ValueError(f'model name {e.name!r} given twice')
        seen.add(e.name)
        if not osp.isfile(e.checkpoint):
            raise FileNotFoundError(f'{e.name}: checkpoint not found: {e.checkpoint}')
        for method in e.calibrators:
            if method not in known_all:
                raise ValueError(f'{e.name}: unknown calibrator {method!r}; valid: {", ".join(known)}')
    return entries


def _check_out(out_dir: str, entries: Sequence[ShiftEntry], *, force: bool, resume: bool) -> None:
    """Refuse before any computation if ``out_dir`` holds a comparison or an analysis (unless force/resume)."""
    held = [name for name in _OUTPUTS if osp.exists(osp.join(out_dir, name))]
    held += [f'{e.name}/' for e in entries if any(osp.exists(osp.join(out_dir, e.name, f))
                                                  for f in ('report.md', 'results.json', 'shift'))]
    if held and not (force or resume):
        raise FileExistsError(f'{out_dir} already holds a comparison ({", ".join(held)}): pass --resume to continue '
                              'it (finished shift results are kept) or --force to redo everything')


def _aligned_options(entries: Sequence[ShiftEntry], cfg_options: Optional[Dict[str, Any]], *, fit_split: str,
                     held_out: float, seed: int) -> Dict[str, Dict[str, Any]]:
    """Per entry, the cfg_options that make every model evaluate the same images (module docstring)."""
    from ..apis.analyze import _dataset_key, _fit_loader_cfg, load_analysis_config

    base = dict(cfg_options or {})
    out = {e.name: dict(base) for e in entries}
    rests = []
    for e in entries:
        if e.calibrators:
            cfg = load_analysis_config(e.config, base)
            _, test_cfg, desc = _fit_loader_cfg(cfg, fit_split, held_out, seed)
            if desc.startswith('held-out'):
                rests.append(_dataset_key(test_cfg['dataset']['dataset']))
    if not rests:
        return out
    for e in entries:
        if e.calibrators:
            continue
        cfg = load_analysis_config(e.config, base)
        dataset = _plain_dict(cfg.test_dataloader['dataset'])
        if _dataset_key(dataset) not in rests:
            continue  # another test set: nothing to align with (reported through same_images)
        out[e.name]['test_dataloader.dataset'] = dict(_delete_=True, type='HeldOutSplit', dataset=dataset,
                                                      part='train', held_out=held_out, seed=seed)
    return out


def _plain_dict(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_dict(v) for v in value)
    return value


def compare_under_shift(entries: Sequence[ShiftEntry], *, out_dir: str, corruptions: Sequence[str] = ('all',),
                        severities: Sequence[int] = (1, 3, 5), cfg_options: Optional[Dict[str, Any]] = None,
                        fit_split: str = 'auto', held_out: float = 0.2, worst_k: int = 6,
                        device: Optional[str] = None, weights_only: bool = False, max_pixels_per_image: int = 10000,
                        seed: int = 0, force: bool = False, resume: bool = False, launcher: str = 'none',
                        verbose: bool = True) -> Dict[str, Any]:
    """Analyse every entry under the corruptions and write the comparison (module docstring).

    Args:
        entries: the models (:class:`ShiftEntry`, :func:`entry_from_work_dir`).
        out_dir: output folder: ``<name>/`` (each model's full analysis report), ``comparison.md``,
            ``comparison.json``, ``comparison_*.png``.
        corruptions, severities: the sweep (names, family names or ``'all'``; severities 1–5).
        cfg_options: config overrides applied to every model.
        fit_split, held_out, worst_k, device, weights_only, max_pixels_per_image, seed, launcher, verbose: as for
            :func:`~calibseg.apis.analyze_calibration`.
        force, resume: redo / continue a comparison that ``out_dir`` holds (refused otherwise).

    Returns:
        The ``comparison.json`` content.
    """
    from ..apis.analyze import analyze_calibration
    from ..datasets.transforms.corruptions import check_severity, valid_corruptions
    from ..utils.distributed import dist_info

    entries = _check_entries(entries)
    corruptions = valid_corruptions(list(corruptions))
    if not corruptions:
        raise ValueError('no corruption given: the comparison is under shift (e.g. corruptions=["all"])')
    severities = sorted({check_severity(s) for s in severities})
    if not severities:
        raise ValueError('no severity given (1..5)')
    _check_out(out_dir, entries, force=force, resume=resume)
    options = _aligned_options(entries, cfg_options, fit_split=fit_split, held_out=held_out, seed=seed)
    rank, _ = dist_info()
    log: Callable = print if verbose and rank == 0 else (lambda *a, **k: None)
    runs: Dict[str, Dict[str, Any]] = {}
    seconds: Dict[str, float] = {}
    binary = None
    for i, e in enumerate(entries):
        log(f'[compare] model {i + 1}/{len(entries)}: {e.name} ({osp.basename(e.config)}'
            f'{" + " + ", ".join(e.calibrators) if e.calibrators else ""})', flush=True)
        start = time.time()
        results = analyze_calibration(e.config, e.checkpoint, out_dir=osp.join(out_dir, e.name),
                                      cfg_options=options[e.name], calibrators=list(e.calibrators),
                                      fit_split=fit_split, held_out=held_out, worst_k=worst_k,
                                      corruptions=corruptions, severities=severities, launcher=launcher,
                                      device=device, weights_only=weights_only,
                                      max_pixels_per_image=max_pixels_per_image, seed=seed, force=force,
                                      resume=resume, verbose=verbose)
        seconds[e.name] = time.time() - start
        if binary is None:
            binary = bool(results['binary'])
        elif bool(results['binary']) != binary:
            raise ValueError(f'{e.name} has a {"one-channel" if results["binary"] else "multi-class"} head and '
                             f'{entries[0].name} not: compare models of one kind')
        runs[e.name] = results
    comparison = comparison_table(entries, runs, seconds=seconds)
    if rank == 0:
        write_comparison(comparison, out_dir)
        log(f'[compare] wrote {osp.join(out_dir, "comparison.md")} ({sum(seconds.values()):.0f} s)', flush=True)
    return comparison


def _lines(entries: Sequence[ShiftEntry], runs: Mapping[str, Mapping[str, Any]]) -> List[Tuple[str, str, str]]:
    """``(line name, model name, method in the analysis)`` for every model and calibrator."""
    out = []
    for e in entries:
        for method in runs[e.name]['methods']:
            out.append((e.name if method == 'uncalibrated' else f'{e.name}+{method}', e.name, method))
    return out


def comparison_table(entries: Sequence[ShiftEntry], runs: Mapping[str, Mapping[str, Any]], *,
                     seconds: Optional[Mapping[str, float]] = None) -> Dict[str, Any]:
    """The comparison's numbers from each model's analysis results (``results.json`` content).

    ``lines[line][key]`` is ``{'0': clean value, '1': mean over corruptions at severity 1, ...}`` (``None`` where
    a value is missing).

    Example:
        >>> cell = lambda e: {'uncalibrated': {'headline': {'ECE_15': e, 'mIoU': 50.0}}}
        >>> run = {'binary': False, 'config': 'a.py', 'checkpoint': 'a.pth', 'test_images': 2,
        ...        'methods': {'uncalibrated': {'headline': {'ECE_15': 1.0, 'mIoU': 60.0}, 'images': []}},
        ...        'shift': {'fog': {'1': cell(3.0)}, 'snow': {'1': cell(5.0)}}}
        >>> table = comparison_table([ShiftEntry('ce', 'a.py', 'a.pth')], {'ce': run})
        >>> table['lines']['ce']['ECE_15']
        {'0': 1.0, '1': 4.0}
    """
    first = runs[entries[0].name]
    binary = bool(first['binary'])
    keys = BINARY_KEYS if binary else MULTICLASS_KEYS
    corruptions = sorted({c for r in runs.values() for c in (r.get('shift') or {})})
    severities = sorted({int(s) for r in runs.values() for per in (r.get('shift') or {}).values() for s in per})
    lines: Dict[str, Dict[str, Dict[str, Optional[float]]]] = {}
    for line, model, method in _lines(entries, runs):
        run = runs[model]
        per_key = {}
        for key, *_ in keys:
            means = shift_means(run.get('shift') or {}, key).get(method, {})
            values = {'0': run['methods'][method]['headline'].get(key)}
            values.update({str(s): means.get(s) for s in severities})
            per_key[key] = values
        lines[line] = per_key
    image_sets = {name: sorted(str(r['img_path']) for r in run['methods']['uncalibrated'].get('images', []))
                  for name, run in runs.items()}
    same = len({json.dumps(v) for v in image_sets.values()}) == 1
    models = [dict(name=e.name, config=str(e.config), checkpoint=str(e.checkpoint), calibrators=list(e.calibrators),
                   report=f'{e.name}/report.md', test_images=runs[e.name].get('test_images'),
                   fit_split=runs[e.name].get('fit_split'), seconds=(seconds or {}).get(e.name)) for e in entries]
    return dict(binary=binary, keys=[k for k, *_ in keys], corruptions=corruptions, severities=severities,
                models=models, lines=lines, same_images=same)


def _fmt(value: Optional[float], digits: int) -> str:
    return '–' if value is None else f'{value:.{digits}f}'


def _summary(table: Mapping[str, Any]) -> List[str]:
    keys = BINARY_KEYS if table['binary'] else MULTICLASS_KEYS
    cal_key, cal_title, cal_digits, _ = keys[2] if table['binary'] else keys[0]
    acc_key, acc_title, acc_digits, acc_lower = keys[0] if table['binary'] else keys[1]
    lines = table['lines']
    top = str(max(table['severities'])) if table['severities'] else None
    out = []
    if top is None:
        return out
    for severity in ('0', top):
        values = {n: v[cal_key].get(severity) for n, v in lines.items() if v[cal_key].get(severity) is not None}
        if values:
            ranked = sorted(values, key=values.get)
            n = len(table['corruptions'])
            where = 'clean' if severity == '0' else \
                f'severity {severity} (mean over {n} corruption{"s" if n != 1 else ""})'
            out.append(f'{where}: lowest {cal_title} **{ranked[0]}** ({_fmt(values[ranked[0]], cal_digits)}), '
                       f'highest {ranked[-1]} ({_fmt(values[ranked[-1]], cal_digits)}).')
    growth = {n: (v[cal_key].get(top), v[cal_key].get('0')) for n, v in lines.items()}
    growth = {n: a - b for n, (a, b) in growth.items() if a is not None and b is not None}
    if growth:
        order = sorted(growth, key=growth.get)
        out.append(f'{cal_title} change from clean to severity {top}: '
                   + ', '.join(f'{n} {growth[n]:+.{cal_digits}f}' for n in order) + '.')
    acc = {n: v[acc_key].get(top) for n, v in lines.items() if v[acc_key].get(top) is not None}
    if acc:
        best = (min if acc_lower else max)(acc, key=acc.get)
        out.append(f'best {acc_title} at severity {top}: **{best}** ({_fmt(acc[best], acc_digits)}).')
    if not table['same_images']:
        out.append('**Warning**: the models were evaluated on different image lists (different test sets or '
                   'fit splits); their numbers are not directly comparable.')
    return out


def write_comparison(table: Mapping[str, Any], out_dir: str) -> str:
    """Write ``comparison.md``, ``comparison.json`` and the figures (atomically); returns the markdown's path."""
    from ..utils.files import atomic_write_text
    from ..visualization.analysis_plots import plot_shift_curves

    os.makedirs(out_dir, exist_ok=True)
    keys = BINARY_KEYS if table['binary'] else MULTICLASS_KEYS
    severities = ['0'] + [str(s) for s in table['severities']]
    figures = []
    for key, title, _, lower in keys[:_FIGURES[table['binary']]]:
        curves = {n: {int(s): v for s, v in per[key].items() if s != '0'} for n, per in table['lines'].items()}
        clean = {n: per[key]['0'] for n, per in table['lines'].items() if per[key]['0'] is not None}
        name = f'comparison_{key.lower()}.png'
        tmp = osp.join(out_dir, f'.{name}.tmp.png')
        plot_shift_curves(curves, tmp, ylabel=f'{title}, mean over corruptions',
                          title=f'{key} under corruption ({"lower" if lower else "higher"} is better)', clean=clean)
        os.replace(tmp, osp.join(out_dir, name))
        figures.append(name)
    md = ['# Calibration under corruption: model comparison', '']
    md += ['| model | config | checkpoint | calibrators | test images | calibrators fitted on | time (s) | report |',
           '|---|---|---|---|---:|---|---:|---|']
    for m in table['models']:
        md.append(f'| {m["name"]} | `{osp.basename(m["config"])}` | `{osp.basename(m["checkpoint"])}` | '
                  f'{", ".join(m["calibrators"]) or "–"} | {m["test_images"]} | {m["fit_split"] or "–"} | '
                  f'{_fmt(m["seconds"], 0)} | [{m["name"]}]({m["report"]}) |')
    md += ['', f'Corruptions ({len(table["corruptions"])}): {", ".join(table["corruptions"])}. Each value at a '
           'severity is the mean over these corruptions; severity 0 is the clean test set. Post-hoc calibrators '
           '(`model+ts`...) are fitted on clean data only.', '', '## Summary', '']
    md += [f'- {line}' for line in _summary(table)] + ['', '## Figures', '']
    md += [' '.join(f'![{f}]({f})' for f in figures), '']
    for s in severities:
        md += [f'## {"Clean" if s == "0" else f"Severity {s}"}', '']
        md += ['| method | ' + ' | '.join(t for _, t, _, _ in keys) + ' |', '|---|' + '---:|' * len(keys)]
        for n, per in table['lines'].items():
            md.append(f'| {n} | ' + ' | '.join(_fmt(per[k].get(s), d) for k, _, d, _ in keys) + ' |')
        md.append('')
    md += ['Every number is in `comparison.json`; per-corruption tables are in each model\'s report.', '']
    path = osp.join(out_dir, 'comparison.md')
    atomic_write_text(osp.join(out_dir, 'comparison.json'), json.dumps(dict(table), indent=1))
    atomic_write_text(path, '\n'.join(md))
    return path
