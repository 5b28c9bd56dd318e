"""The analysis of a study table: rank agreement between metrics, bin-count sensitivity, accuracy against
calibration, what temperature scaling gains, and a Markdown report (``summary.md``).

The statistics are computed here; :mod:`calibseg.visualization.study_plots` only draws them. Signs follow the
metrics' directions: errors (lower is better) agree with each other with tau > 0, and with AUROC, HCS, mIoU or aAcc
(higher is better) with tau < 0 when they rank models alike. With n models, tau of two independent rankings has a
standard deviation of about :func:`~calibseg.study.kendall.tau_noise` ``(n)`` (0.12 for 32 models): smaller
differences are noise.
"""
from __future__ import annotations

import csv
import io
import math
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .kendall import kendall_tau_b, tau_matrix, tau_noise
from .table import atomic_write_text, read_table

__all__ = ['TAU_METRICS', 'UNCHANGED_BY_TS', 'BIN_FAMILIES', 'REFERENCE_BINS', 'ANALYSIS_FILES',
           'OPTIONAL_ANALYSIS_FILES', 'load_study', 'post_key', 'family_bins', 'bin_sensitivity', 'accuracy_taus',
           'ts_gains', 'ts_rank_taus', 'calibration_labels', 'robustness_taus', 'final_recipes',
           'cross_dataset_taus', 'summary_markdown', 'analyze']

#: metrics of the tau matrix, in display order (post-TS: ``post_`` + each calibration key; mIoU, aAcc unchanged)
TAU_METRICS = ('ECE_15', 'ECE_em_15', 'cwCE_15', 'cwCE_em_15', 'MCE_15', 'RMSCE_15', 'dECE_15', 'KSCE', 'KDECE',
               'MMCE', 'smECE', 'SECE', 'NLL', 'Brier', 'AUROC', 'AURC', 'HCS', 'mIoU', 'aAcc')
UNCHANGED_BY_TS = ('mIoU', 'aAcc')
BIN_FAMILIES = ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE')
REFERENCE_BINS = 15
#: what :func:`analyze` writes into its output folder
ANALYSIS_FILES = ('kendall_tau.png', 'kendall_tau_pre.csv', 'kendall_tau_post.csv', 'bin_sensitivity.png',
                  'accuracy_vs_calibration.png', 'ts_gain.png', 'summary.md')
#: what :func:`analyze` writes when the data is there: robustness (a table measured under corruptions) and
#: cross-dataset (a second study table given); stale ones are removed by a forced analysis without that data
OPTIONAL_ANALYSIS_FILES = ('robustness.png', 'robustness_tau.csv', 'cross_dataset.png', 'cross_dataset_tau.csv')
#: columns a study table must have
REQUIRED = ('ECE_15', 'post_ECE_15', 'NLL', 'post_NLL', 'mIoU', 'T')
#: columns the robustness analysis reads (written by a study with corruptions)
SHIFT_REQUIRED = ('mIoU_drop', 'shift_mIoU')
#: columns the cross-dataset matching reads, in both tables
RECIPE_REQUIRED = ('name', 'method', 'iteration', 'decode_channels')

Sensitivity = Dict[str, Dict[str, List[Tuple[int, float, float]]]]


def load_study(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, List[str]]]:
    """``(numeric columns as float arrays, text columns as lists)`` of the complete rows of a study table (see
    :func:`~calibseg.study.table.read_table`); empty cells read as NaN in numeric columns."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'study table not found: {path}')
    rows = read_table(path)
    if not rows:
        raise ValueError(f'{path} holds no model rows')
    numeric: Dict[str, np.ndarray] = {}
    text: Dict[str, List[str]] = {}
    for name in rows[0]:
        cells = [r[name] for r in rows]
        try:
            numeric[name] = np.array([float(c) if c != '' else math.nan for c in cells], dtype=np.float64)
        except ValueError:
            text[name] = cells
    return numeric, text


def post_key(key: str) -> str:
    """The column of ``key`` after temperature scaling (accuracy columns are unchanged by TS).

    Example:
        >>> post_key('ECE_15'), post_key('mIoU')
        ('post_ECE_15', 'mIoU')
    """
    return key if key in UNCHANGED_BY_TS else f'post_{key}'


def family_bins(numeric: Dict[str, np.ndarray], family: str) -> List[int]:
    """Bin counts ``B`` of the columns ``<family>_<B>``, ascending."""
    pattern = re.compile(rf'^{re.escape(family)}_(\d+)$')
    return sorted(int(m.group(1)) for m in map(pattern.match, numeric) if m)


def bin_sensitivity(numeric: Dict[str, np.ndarray]) -> Sensitivity:
    """``{family: {'pre'|'post': [(B, tau(value_B, value_15), median over models of value_B / value_15)]}}``."""
    out: Sensitivity = {}
    for family in BIN_FAMILIES:
        bins = family_bins(numeric, family)
        if REFERENCE_BINS not in bins:
            continue
        out[family] = {}
        for stage, prefix in (('pre', ''), ('post', 'post_')):
            ref = numeric.get(f'{prefix}{family}_{REFERENCE_BINS}')
            if ref is None:
                continue
            points = []
            for b in bins:
                value = numeric[f'{prefix}{family}_{b}']
                with np.errstate(divide='ignore', invalid='ignore'):
                    ratio = value / ref
                ratio = ratio[np.isfinite(ratio)]
                points.append((b, kendall_tau_b(value, ref), float(np.median(ratio)) if ratio.size else math.nan))
            out[family][stage] = points
    return out


def accuracy_taus(numeric: Dict[str, np.ndarray], keys: Sequence[str] = ('ECE_15', 'NLL')) -> Dict[str, float]:
    """``{'mIoU~<key>': tau(mIoU, key)}`` for each key pre and post TS (``post_<key>``)."""
    taus = {}
    for key in keys:
        for k in (key, post_key(key)):
            if k in numeric:
                taus[f'mIoU~{k}'] = kendall_tau_b(numeric['mIoU'], numeric[k])
    return taus


def ts_gains(numeric: Dict[str, np.ndarray], keys: Sequence[str] = ('ECE_15', 'NLL')
             ) -> Dict[str, Tuple[np.ndarray, float]]:
    """``{key: (gain = key - post_key per model, tau(pre-TS key, gain))}``."""
    out = {}
    for key in keys:
        gain = numeric[key] - numeric[f'post_{key}']
        out[key] = (gain, kendall_tau_b(numeric[key], gain))
    return out


def ts_rank_taus(numeric: Dict[str, np.ndarray], labels: Sequence[str]) -> Dict[str, float]:
    """``{key: tau(key, post_<key>)}``: how well a model's rank before temperature scaling predicts its rank after,
    for each calibration key of ``labels`` (post-hoc consistency)."""
    return {k: kendall_tau_b(numeric[k], numeric[post_key(k)]) for k in labels if k not in UNCHANGED_BY_TS}


def calibration_labels(numeric: Dict[str, np.ndarray]) -> List[str]:
    """The :data:`TAU_METRICS` calibration keys (not mIoU, aAcc) present pre and post TS, in display order."""
    return [k for k in TAU_METRICS if k not in UNCHANGED_BY_TS and k in numeric and post_key(k) in numeric]


def robustness_taus(numeric: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """Kendall tau between robustness and calibration across the models, per calibration key ``k``:

    * ``drop~pre`` / ``drop~post``: tau(``mIoU_drop``, ``k`` / ``post_k``), clean calibration. Robust models
      (small drop) are the better calibrated ones (small error) when tau > 0 (< 0 for AUROC, HCS).
    * ``shift_mIoU~pre`` / ``~post``: tau(``shift_mIoU``, ``k`` / ``post_k``): the same with the corrupted mIoU
      (robust = high), so agreement is tau < 0 for errors.
    * ``clean~shift`` / ``post_clean~post_shift``: tau(``k``, ``shift_k``) and tau(``post_k``, ``post_shift_k``):
      whether clean calibration ranks models like calibration under corruption.

    Plus ``{'_': {'mIoU~drop': tau(mIoU, mIoU_drop), 'n': models}}``: a drop can only be large for a model that
    is accurate when clean, which confounds the drop with the clean mIoU. ``{}`` for a table without robustness
    columns (:data:`SHIFT_REQUIRED`).
    """
    if any(k not in numeric for k in SHIFT_REQUIRED):
        return {}
    drop, shifted = numeric['mIoU_drop'], numeric['shift_mIoU']
    out: Dict[str, Dict[str, float]] = {}
    for k in calibration_labels(numeric):
        pre, post = numeric[k], numeric[post_key(k)]
        row = {'drop~pre': kendall_tau_b(drop, pre), 'drop~post': kendall_tau_b(drop, post),
               'shift_mIoU~pre': kendall_tau_b(shifted, pre), 'shift_mIoU~post': kendall_tau_b(shifted, post)}
        if f'shift_{k}' in numeric:
            row['clean~shift'] = kendall_tau_b(pre, numeric[f'shift_{k}'])
        if f'post_shift_{k}' in numeric:
            row['post_clean~post_shift'] = kendall_tau_b(post, numeric[f'post_shift_{k}'])
        out[k] = row
    n = int(np.sum(np.isfinite(drop)))
    out['_'] = {'mIoU~drop': kendall_tau_b(numeric['mIoU'], drop), 'n': float(n)}
    return out


Table = Tuple[Dict[str, np.ndarray], Dict[str, List[str]]]


def _cell(table: Table, key: str, i: int) -> str:
    numeric, text = table
    if key in numeric:
        v = numeric[key][i]
        return '' if not np.isfinite(v) else (str(int(v)) if float(v).is_integer() else repr(float(v)))
    return text[key][i]


def final_recipes(table: Table) -> Tuple[Dict[Tuple[str, str], int], List[str]]:
    """``({(method, decode_channels): row}, notes)``: each recipe's final checkpoint. A run is the part of
    ``name`` before ``@``; its final checkpoint is its row with the most iterations; of several runs of one recipe
    the longest-trained is kept (the others are listed in ``notes``).

    Raises:
        KeyError: the table lacks a column of :data:`RECIPE_REQUIRED`.
    """
    numeric, text = table
    missing = [k for k in RECIPE_REQUIRED if k not in numeric and k not in text]
    if missing:
        raise KeyError(f'the study table lacks {missing}: recipes cannot be matched')
    runs: Dict[str, int] = {}
    iteration = numeric['iteration'] if 'iteration' in numeric else np.full(len(text['name']), np.nan)
    for i, name in enumerate(text['name']):
        run = name.split('@', 1)[0]
        best = runs.get(run)
        if best is None or (np.nan_to_num(iteration[i], nan=-1) > np.nan_to_num(iteration[best], nan=-1)):
            runs[run] = i
    recipes: Dict[Tuple[str, str], int] = {}
    notes = []
    for _, i in sorted(runs.items()):
        key = (_cell(table, 'method', i), _cell(table, 'decode_channels', i))
        other = recipes.get(key)
        if other is not None:
            keep, drop = (i, other) if np.nan_to_num(iteration[i], nan=-1) > np.nan_to_num(iteration[other],
                                                                                          nan=-1) else (other, i)
            notes.append(f'{text["name"][drop]} left out: {text["name"][keep]} is a longer run of the same recipe')
            recipes[key] = keep
        else:
            recipes[key] = i
    return recipes, notes


def cross_dataset_taus(first: Table, second: Table) -> Dict[str, object]:
    """Kendall tau of the recipes' final-checkpoint values between two study tables (:func:`final_recipes`, matched
    by method and decode-head width), per key of :data:`TAU_METRICS` present in both, pre and post TS.

    Returns ``{'recipes': [(method, channels)], 'n': matched, 'taus': {key: (tau pre, tau post)},
    'values': {key: (first values, second values, first post, second post)}, 'only_first': [...],
    'only_second': [...], 'notes': [...]}``.
    """
    a, notes_a = final_recipes(first)
    b, notes_b = final_recipes(second)
    recipes = sorted(set(a) & set(b))
    rows_a = np.array([a[r] for r in recipes], dtype=np.int64)
    rows_b = np.array([b[r] for r in recipes], dtype=np.int64)
    taus, values = {}, {}
    for key in TAU_METRICS:
        post = post_key(key)
        if not all(k in t[0] for t in (first, second) for k in (key, post)):
            continue
        va, vb = first[0][key][rows_a], second[0][key][rows_b]
        pa, pb = first[0][post][rows_a], second[0][post][rows_b]
        taus[key] = (kendall_tau_b(va, vb), kendall_tau_b(pa, pb))
        values[key] = (va, vb, pa, pb)
    return {'recipes': recipes, 'n': len(recipes), 'taus': taus, 'values': values,
            'only_first': sorted(set(a) - set(b)), 'only_second': sorted(set(b) - set(a)),
            'notes': notes_a + notes_b}


def _fmt(v: float, digits: int = 2) -> str:
    return '-' if v is None or not np.isfinite(v) else f'{v:.{digits}f}'


def _matrix_csv(m: np.ndarray, labels: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(['metric', *labels])
    writer.writerows([label, *[_fmt(v, 4) for v in row]] for label, row in zip(labels, m))
    return buffer.getvalue()


def _mean_offdiag(m: np.ndarray) -> np.ndarray:
    off = m.copy()
    np.fill_diagonal(off, np.nan)
    return np.nanmean(off, axis=1)


def _robustness_lines(robustness: Dict[str, Dict[str, float]], numeric: Dict[str, np.ndarray],
                      text: Dict[str, List[str]]) -> List[str]:
    corruptions = ', '.join(sorted(set(text.get('shift_corruptions', [])))) or '-'
    severity = ', '.join(sorted({_fmt(v, 0) for v in numeric.get('shift_severity', [])})) or '-'
    lines = ['## Robustness and calibration', '']
    if not robustness:
        return lines + ['Not measured: the table has no robustness columns (`tools/calibration_study.py '
                        '--corruptions demo`, into a table of its own).', '']
    n = int(robustness['_']['n'])
    lines += [f'Each model measured again on the test split under `{corruptions}` (severity {severity}), T fitted on '
              'clean data; `mIoU_drop` = clean mIoU - mean corrupted mIoU. Robust models are the better calibrated '
              'ones when tau(mIoU drop, error) > 0 and tau(corrupted mIoU, error) < 0 '
              f'(noise +-{_fmt(tau_noise(n))} for {n} models).', '', '![robustness](robustness.png)', '',
              f'- mIoU drop: median {_fmt(np.nanmedian(numeric["mIoU_drop"]))}, range '
              f'{_fmt(np.nanmin(numeric["mIoU_drop"]))} - {_fmt(np.nanmax(numeric["mIoU_drop"]))} points; '
              f'tau(clean mIoU, mIoU drop) = {_fmt(robustness["_"]["mIoU~drop"])} (the drop is bounded by the '
              'clean mIoU)']
    if 'shift_ECE_15' in numeric:
        lines.append(f'- ECE_15 median clean {_fmt(np.nanmedian(numeric["ECE_15"]))} -> corrupted '
                     f'{_fmt(np.nanmedian(numeric["shift_ECE_15"]))} before TS, '
                     f'{_fmt(np.nanmedian(numeric["post_ECE_15"]))} -> '
                     f'{_fmt(np.nanmedian(numeric.get("post_shift_ECE_15", np.array([math.nan]))))} after TS')
    lines += ['', '| metric | tau(drop, pre) | tau(drop, post) | tau(corr. mIoU, pre) | tau(corr. mIoU, post) | '
              'tau(clean, corrupted) pre | post |', '|---|---:|---:|---:|---:|---:|---:|']
    for key, row in robustness.items():
        if key == '_':
            continue
        cells = [row.get(c, math.nan) for c in ('drop~pre', 'drop~post', 'shift_mIoU~pre', 'shift_mIoU~post',
                                                 'clean~shift', 'post_clean~post_shift')]
        lines.append(f'| {key} | ' + ' | '.join(_fmt(c) for c in cells) + ' |')
    return lines + ['']


def _cross_lines(cross: Dict[str, object], cross_name: str, cross_table: str) -> List[str]:
    lines = ['## Calibration across datasets', '']
    if not cross:
        return lines + ['Not measured: no second-dataset study table given (`tools/run_demo_study.py --dataset '
                        'cityscapes`; `tools/analyze_study.py --cross-table`).', '']
    n = int(cross['n'])
    names = ', '.join(f'{m} ({c} ch)' for m, c in cross['recipes'])
    lines += [f'The same recipes trained on the {cross_name} data ([`{osp.basename(cross_table)}`]({cross_table})), '
              f'matched by method and head width at each run\'s final checkpoint: {n} recipes ({names}). tau > 0: '
              f'a recipe ranks alike on both datasets (noise +-{_fmt(tau_noise(n))} for {n} recipes).', '',
              '![cross-dataset](cross_dataset.png)', '', '| metric | tau pre TS | tau post TS |', '|---|---:|---:|']
    lines += [f'| {k} | {_fmt(a)} | {_fmt(b)} |' for k, (a, b) in cross['taus'].items()]
    extra = [f'only in this table: {", ".join(f"{m} ({c} ch)" for m, c in cross["only_first"])}'
             if cross['only_first'] else '',
             f'only in the {cross_name} table: {", ".join(f"{m} ({c} ch)" for m, c in cross["only_second"])}'
             if cross['only_second'] else '', *cross['notes']]
    lines += [''] + [f'- {e}' for e in extra if e]
    return lines + ['']


def summary_markdown(numeric: Dict[str, np.ndarray], text: Dict[str, List[str]], *, table: str,
                     reproduce: Sequence[str], tau_pre: np.ndarray, tau_post: np.ndarray, labels: Sequence[str],
                     sensitivity: Sensitivity, acc_taus: Dict[str, float], gain_taus: Dict[str, float],
                     rank_taus: Optional[Dict[str, float]] = None,
                     robustness: Optional[Dict[str, Dict[str, float]]] = None,
                     cross: Optional[Dict[str, object]] = None, cross_name: str = 'second dataset',
                     cross_table: str = '') -> str:
    """The Markdown report: protocol, key numbers, the seven questions, tau summary, bin counts, accuracy, TS gain
    and rank preservation, robustness, cross-dataset, one line a model."""
    from .questions import seven_questions

    n = len(numeric['ECE_15'])
    rank_taus = ts_rank_taus(numeric, labels) if rank_taus is None else rank_taus
    lines = [f'# Calibration study: {n} segmentation models, per pixel', '']
    if reproduce:
        lines += ['Reproduce (from the repository root):', '', '```bash', *reproduce, '```', '']
    lines += [f'Generated by `tools/analyze_study.py` from [`{osp.basename(table)}`]({table}) '
              f'({n} rows). Calibration errors, mIoU, aAcc and HCS in percent; NLL and Brier raw.', '']
    for key in ('fit_split', 'test_split', 'ts_method'):
        values = sorted(set(text.get(key, [])))
        if values:
            lines.append(f'- {key}: ' + ', '.join(f'`{v}`' for v in values))
    ece, post = numeric['ECE_15'], numeric['post_ECE_15']
    improved = int(np.sum(post < ece))
    lines += [
        f"- temperature T: median {_fmt(np.nanmedian(numeric['T']), 3)}, range {_fmt(np.nanmin(numeric['T']), 3)}"
        f" - {_fmt(np.nanmax(numeric['T']), 3)}",
        f'- ECE_15 median {_fmt(np.nanmedian(ece))} -> {_fmt(np.nanmedian(post))} after TS; TS lowers ECE_15 for '
        f'{improved}/{n} models, NLL for {int(np.sum(numeric["post_NLL"] < numeric["NLL"]))}/{n}',
        f'- noise level of tau for {n} independent rankings: +-{_fmt(tau_noise(n))} (one standard deviation)', '']
    corruptions = ', '.join(sorted(set(text.get('shift_corruptions', []))))
    lines += seven_questions(
        n=n, labels=labels, tau_pre=tau_pre, tau_post=tau_post, rank_taus=rank_taus, gain_taus=gain_taus,
        improved=(improved, n), acc_taus=acc_taus, sensitivity=sensitivity, reference_bins=REFERENCE_BINS,
        numeric=numeric, text=text, robustness=robustness, corruptions=corruptions, cross=cross,
        cross_name=cross_name)
    lines += [
        '## Agreement between metrics (Kendall tau-b across models)', '',
        '![Kendall tau](kendall_tau.png)', '',
        'Mean tau of each metric with all the others (errors and AUROC/HCS/mIoU point in opposite directions, so '
        'compare within a kind):', '',
        '| metric | mean tau pre TS | mean tau post TS |', '|---|---:|---:|']
    mean_pre, mean_post = _mean_offdiag(tau_pre), _mean_offdiag(tau_post)
    for label, a, b in zip(labels, mean_pre, mean_post):
        lines.append(f'| {label} | {_fmt(a)} | {_fmt(b)} |')
    errors = [i for i, k in enumerate(labels) if k not in ('AUROC', 'HCS', 'mIoU', 'aAcc')]
    pairs = [(tau_pre[i, j], labels[i], labels[j]) for a, i in enumerate(errors) for j in errors[a + 1:]
             if np.isfinite(tau_pre[i, j])]
    if pairs:
        pairs.sort()
        lo, hi = pairs[0], pairs[-1]
        lines += ['', f'Among the error metrics before TS, the closest pair is {hi[1]} / {hi[2]} (tau {_fmt(hi[0])}) '
                  f'and the most discordant {lo[1]} / {lo[2]} (tau {_fmt(lo[0])}).']
    lines += ['', '## Bin count', '', '![bin sensitivity](bin_sensitivity.png)', '',
              f'| family | tau(B=5, B={REFERENCE_BINS}) pre | post | tau(B=500, B={REFERENCE_BINS}) pre | post |',
              '|---|---:|---:|---:|---:|']
    for family, stages in sensitivity.items():
        cells = [_fmt(next((t for bb, t, _ in stages.get(stage, []) if bb == b), math.nan))
                 for b in (5, 500) for stage in ('pre', 'post')]
        lines.append(f'| {family} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Accuracy and calibration', '', '![accuracy vs calibration](accuracy_vs_calibration.png)', '']
    lines += [f'- tau({k.replace("~", ", ")}) = {_fmt(v)}' for k, v in acc_taus.items()]
    lines += ['', '## What temperature scaling gains', '', '![TS gain](ts_gain.png)', '']
    lines += [f'- tau(pre-TS {k}, gain in {k}) = {_fmt(v)}' for k, v in gain_taus.items()]
    lines += ['', 'Rank before vs after TS (tau(key, post_key); 1: TS keeps the ranking):', '',
              '| metric | tau(pre, post) |', '|---|---:|']
    lines += [f'| {k} | {_fmt(v)} |' for k, v in rank_taus.items()]
    lines += [''] + _robustness_lines(robustness or {}, numeric, text)
    lines += _cross_lines(cross or {}, cross_name, cross_table)
    shift = 'mIoU_drop' in numeric
    lines += ['## Models', '',
              '| model | method | loss | iter | channels | mIoU | ECE_15 | post ECE_15 | T | NLL | post NLL |'
              + (' corr. mIoU | corr. ECE_15 | corr. post ECE_15 |' if shift else ''),
              '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|' + ('---:|' * 3 if shift else '')]
    names = text.get('name', [str(i) for i in range(n)])
    order = sorted(range(n), key=lambda i: names[i])

    def cell(key: str, i: int, digits: int = 2) -> str:
        if key in numeric:
            return _fmt(numeric[key][i], digits)
        return text.get(key, ['-'] * n)[i] or '-'

    for i in order:
        lines.append(f"| {names[i]} | {cell('method', i)} | {cell('loss', i)} | {cell('iteration', i, 0)} | "
                     f"{cell('decode_channels', i, 0)} | {cell('mIoU', i)} | {cell('ECE_15', i)} | "
                     f"{cell('post_ECE_15', i)} | {cell('T', i, 3)} | {cell('NLL', i, 4)} | {cell('post_NLL', i, 4)} |"
                     + (f" {cell('shift_mIoU', i)} | {cell('shift_ECE_15', i)} | {cell('post_shift_ECE_15', i)} |"
                        if shift else ''))
    return '\n'.join(lines) + '\n'


def _tau_rows_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([r[0], *[_fmt(v, 4) for v in r[1:]]] for r in rows)
    return buffer.getvalue()


def analyze(table: str, out_dir: str, *, reproduce: Sequence[str] = (), force: bool = False,
            cross_table: Optional[str] = None, cross_name: str = 'Cityscapes demo') -> Dict[str, str]:
    """Write every figure, the tau matrices and ``summary.md`` (:data:`ANALYSIS_FILES`) into ``out_dir``; returns
    ``{file name: path}``. Existing outputs are refused unless ``force``; each file is written atomically.

    With robustness columns in the table (a study measured under corruptions) also ``robustness.png`` and
    ``robustness_tau.csv``; with ``cross_table`` (a study of the same recipes on another dataset, called
    ``cross_name``) also ``cross_dataset.png`` and ``cross_dataset_tau.csv`` (:data:`OPTIONAL_ANALYSIS_FILES`).
    """
    from calibseg.visualization.study_plots import (
        plot_accuracy,
        plot_bins,
        plot_cross_dataset,
        plot_gain,
        plot_robustness,
        plot_tau,
    )

    numeric, text = load_study(table)
    missing = [k for k in REQUIRED if k not in numeric]
    if missing:
        raise KeyError(f'{table} lacks the columns {missing}: is it a calibration study table?')
    n = len(numeric['ECE_15'])
    if n < 3:
        raise ValueError(f'{table} has {n} models; rank correlations need at least 3 (20 or more to be meaningful)')
    cross = None
    if cross_table:
        other = load_study(cross_table)
        if any(k not in other[0] for k in REQUIRED):
            raise KeyError(f'{cross_table} lacks the columns {[k for k in REQUIRED if k not in other[0]]}: is it a '
                           'calibration study table?')
        try:
            cross = cross_dataset_taus((numeric, text), other)
        except KeyError as err:
            raise KeyError(f'{table} / {cross_table}: {err.args[0]}') from err
    robustness = robustness_taus(numeric)
    names = list(ANALYSIS_FILES) + (['robustness.png', 'robustness_tau.csv'] if robustness else []) + (
        ['cross_dataset.png', 'cross_dataset_tau.csv'] if cross else [])
    paths = {name: osp.join(out_dir, name) for name in names}
    existing = [osp.join(out_dir, f) for f in (*ANALYSIS_FILES, *OPTIONAL_ANALYSIS_FILES)
                if osp.exists(osp.join(out_dir, f))]
    if existing and not force:
        raise FileExistsError(f'{existing[0]} (and {len(existing) - 1} more outputs) exist: pass force=True '
                              '(--force) to replace them')
    os.makedirs(out_dir, exist_ok=True)
    for stale in (f for f in OPTIONAL_ANALYSIS_FILES if f not in paths):
        if osp.exists(osp.join(out_dir, stale)):  # from an analysis with data this one lacks
            os.remove(osp.join(out_dir, stale))
    labels = [k for k in TAU_METRICS if k in numeric and post_key(k) in numeric]
    tau_pre = tau_matrix(numeric, labels)
    tau_post = tau_matrix(numeric, [post_key(k) for k in labels])
    sensitivity = bin_sensitivity(numeric)
    acc_taus = accuracy_taus(numeric)
    gains = ts_gains(numeric)
    rank_taus = ts_rank_taus(numeric, labels)
    groups = text.get('method', ['model'] * n)
    plot_tau(tau_pre, tau_post, labels, n_models=n, path=paths['kendall_tau.png'])
    atomic_write_text(paths['kendall_tau_pre.csv'], _matrix_csv(tau_pre, labels))
    atomic_write_text(paths['kendall_tau_post.csv'], _matrix_csv(tau_post, labels))
    plot_bins(sensitivity, reference_bins=REFERENCE_BINS, path=paths['bin_sensitivity.png'])
    plot_accuracy(numeric, acc_taus, path=paths['accuracy_vs_calibration.png'])
    plot_gain(numeric, gains, groups, path=paths['ts_gain.png'])
    if robustness:
        columns = ('drop~pre', 'drop~post', 'shift_mIoU~pre', 'shift_mIoU~post', 'clean~shift',
                   'post_clean~post_shift')
        rows = [[k, *[r.get(c, math.nan) for c in columns]] for k, r in robustness.items() if k != '_']
        atomic_write_text(paths['robustness_tau.csv'], _tau_rows_csv(['metric', *columns], rows))
        plot_robustness(numeric, robustness, n_models=int(robustness['_']['n']), noise=tau_noise(
            int(robustness['_']['n'])), path=paths['robustness.png'])
    if cross:
        rows = [[k, a, b] for k, (a, b) in cross['taus'].items()]
        atomic_write_text(paths['cross_dataset_tau.csv'], _tau_rows_csv(['metric', 'tau_pre', 'tau_post'], rows))
        plot_cross_dataset(cross, noise=tau_noise(int(cross['n'])), names=('this table', cross_name),
                           path=paths['cross_dataset.png'])
    summary = summary_markdown(numeric, text, table=osp.relpath(table, out_dir), reproduce=reproduce,
                               tau_pre=tau_pre, tau_post=tau_post, labels=labels, sensitivity=sensitivity,
                               acc_taus=acc_taus, gain_taus={k: tau for k, (_, tau) in gains.items()},
                               rank_taus=rank_taus, robustness=robustness, cross=cross, cross_name=cross_name,
                               cross_table=osp.relpath(cross_table, out_dir) if cross_table else '')
    atomic_write_text(paths['summary.md'], summary)
    return paths
