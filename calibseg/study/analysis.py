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
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .kendall import kendall_tau_b, tau_matrix, tau_noise
from .table import atomic_write_text, read_table

__all__ = ['TAU_METRICS', 'UNCHANGED_BY_TS', 'BIN_FAMILIES', 'REFERENCE_BINS', 'ANALYSIS_FILES', 'load_study',
           'post_key', 'family_bins', 'bin_sensitivity', 'accuracy_taus', 'ts_gains', 'summary_markdown',
           'analyze']

#: metrics of the tau matrix, in display order (post-TS: ``post_`` + each calibration key; mIoU, aAcc unchanged)
TAU_METRICS = ('ECE_15', 'ECE_em_15', 'cwCE_15', 'cwCE_em_15', 'MCE_15', 'RMSCE_15', 'dECE_15', 'KSCE', 'KDECE',
               'MMCE', 'smECE', 'SECE', 'NLL', 'Brier', 'AUROC', 'AURC', 'HCS', 'mIoU', 'aAcc')
UNCHANGED_BY_TS = ('mIoU', 'aAcc')
BIN_FAMILIES = ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE')
REFERENCE_BINS = 15
#: what :func:`analyze` writes into its output folder
ANALYSIS_FILES = ('kendall_tau.png', 'kendall_tau_pre.csv', 'kendall_tau_post.csv', 'bin_sensitivity.png',
                  'accuracy_vs_calibration.png', 'ts_gain.png', 'summary.md')
#: columns a study table must have
REQUIRED = ('ECE_15', 'post_ECE_15', 'NLL', 'post_NLL', 'mIoU', 'T')

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


def summary_markdown(numeric: Dict[str, np.ndarray], text: Dict[str, List[str]], *, table: str,
                     reproduce: Sequence[str], tau_pre: np.ndarray, tau_post: np.ndarray, labels: Sequence[str],
                     sensitivity: Sensitivity, acc_taus: Dict[str, float], gain_taus: Dict[str, float]) -> str:
    """The Markdown report: protocol, key numbers, tau summary, bin counts, accuracy, TS gain, one line a model."""
    n = len(numeric['ECE_15'])
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
        f'- noise level of tau for {n} independent rankings: +-{_fmt(tau_noise(n))} (one standard deviation)', '',
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
    lines += ['', '## Models', '',
              '| model | method | loss | iter | channels | mIoU | ECE_15 | post ECE_15 | T | NLL | post NLL |',
              '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    names = text.get('name', [str(i) for i in range(n)])
    order = sorted(range(n), key=lambda i: names[i])

    def cell(key: str, i: int, digits: int = 2) -> str:
        if key in numeric:
            return _fmt(numeric[key][i], digits)
        return text.get(key, ['-'] * n)[i] or '-'

    for i in order:
        lines.append(f"| {names[i]} | {cell('method', i)} | {cell('loss', i)} | {cell('iteration', i, 0)} | "
                     f"{cell('decode_channels', i, 0)} | {cell('mIoU', i)} | {cell('ECE_15', i)} | "
                     f"{cell('post_ECE_15', i)} | {cell('T', i, 3)} | {cell('NLL', i, 4)} | {cell('post_NLL', i, 4)} |")
    return '\n'.join(lines) + '\n'


def analyze(table: str, out_dir: str, *, reproduce: Sequence[str] = (), force: bool = False) -> Dict[str, str]:
    """Write every figure, the tau matrices and ``summary.md`` (:data:`ANALYSIS_FILES`) into ``out_dir``; returns
    ``{file name: path}``. Existing outputs are refused unless ``force``; each file is written atomically."""
    from calibseg.visualization.study_plots import plot_accuracy, plot_bins, plot_gain, plot_tau

    numeric, text = load_study(table)
    missing = [k for k in REQUIRED if k not in numeric]
    if missing:
        raise KeyError(f'{table} lacks the columns {missing}: is it a calibration study table?')
    n = len(numeric['ECE_15'])
    if n < 3:
        raise ValueError(f'{table} has {n} models; rank correlations need at least 3 (20 or more to be meaningful)')
    paths = {name: osp.join(out_dir, name) for name in ANALYSIS_FILES}
    existing = [p for p in paths.values() if osp.exists(p)]
    if existing and not force:
        raise FileExistsError(f'{existing[0]} (and {len(existing) - 1} more outputs) exist: pass force=True '
                              '(--force) to replace them')
    os.makedirs(out_dir, exist_ok=True)
    labels = [k for k in TAU_METRICS if k in numeric and post_key(k) in numeric]
    tau_pre = tau_matrix(numeric, labels)
    tau_post = tau_matrix(numeric, [post_key(k) for k in labels])
    sensitivity = bin_sensitivity(numeric)
    acc_taus = accuracy_taus(numeric)
    gains = ts_gains(numeric)
    groups = text.get('method', ['model'] * n)
    plot_tau(tau_pre, tau_post, labels, n_models=n, path=paths['kendall_tau.png'])
    atomic_write_text(paths['kendall_tau_pre.csv'], _matrix_csv(tau_pre, labels))
    atomic_write_text(paths['kendall_tau_post.csv'], _matrix_csv(tau_post, labels))
    plot_bins(sensitivity, reference_bins=REFERENCE_BINS, path=paths['bin_sensitivity.png'])
    plot_accuracy(numeric, acc_taus, path=paths['accuracy_vs_calibration.png'])
    plot_gain(numeric, gains, groups, path=paths['ts_gain.png'])
    summary = summary_markdown(numeric, text, table=osp.relpath(table, out_dir), reproduce=reproduce,
                               tau_pre=tau_pre, tau_post=tau_post, labels=labels, sensitivity=sensitivity,
                               acc_taus=acc_taus, gain_taus={k: tau for k, (_, tau) in gains.items()})
    atomic_write_text(paths['summary.md'], summary)
    return paths
