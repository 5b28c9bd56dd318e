"""Analyse a calibration study table (``tools/calibration_study.py``): rank correlations, bins, TS, accuracy.

    python tools/analyze_study.py docs/study/study.csv --out-dir docs/study [--reproduce "CMD" ...]

Writes into ``--out-dir``:

* ``kendall_tau.png`` (+ ``kendall_tau_pre.csv``, ``kendall_tau_post.csv``): Kendall's tau-b between every pair of
  metrics across the models, before and after temperature scaling (the benchmark study's main analysis). Signs
  follow the metrics' directions: errors (lower is better) agree with each other with tau > 0, and with AUROC,
  HCS, mIoU or aAcc (higher is better) with tau < 0 when they rank models alike.
* ``bin_sensitivity.png``: for each binned family (ECE, ECE_em, cwCE, cwCE_em, MCE), tau between the value at
  ``B`` bins and at 15 bins across models, and the median ratio ``value_B / value_15``, pre and post TS.
* ``accuracy_vs_calibration.png``: mIoU against ECE-15 and NLL, pre and post TS, with tau.
* ``ts_gain.png``: TS gain (``ECE_15 - post_ECE_15``, ``NLL - post_NLL``) against the pre-TS value.
* ``summary.md``: the key numbers, the per-model table and the figures (the ``--reproduce`` commands on top).

Kendall's tau-b is computed here (Knight's O(n log n) algorithm, vectorised merge passes, ties handled), over the
models where both metrics are finite. With n models, tau of two independent rankings has a standard deviation of
about ``sqrt(2 (2n + 5) / (9 n (n - 1)))`` (0.15 for 24 models): smaller differences are noise.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: metrics of the tau matrix, in display order (post-TS: ``post_`` + each calibration key; mIoU, aAcc unchanged)
TAU_METRICS = ('ECE_15', 'ECE_em_15', 'cwCE_15', 'cwCE_em_15', 'MCE_15', 'RMSCE_15', 'dECE_15', 'KSCE', 'KDECE',
               'MMCE', 'smECE', 'SECE', 'NLL', 'Brier', 'AUROC', 'AURC', 'HCS', 'mIoU', 'aAcc')
UNCHANGED_BY_TS = ('mIoU', 'aAcc')
BIN_FAMILIES = ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE')
REFERENCE_BINS = 15


# ------------------------------------------------------------------------------------------------- Kendall tau
def _tied_pairs(*columns: np.ndarray) -> int:
    """Number of pairs equal in every given column: ``sum_groups t (t - 1) / 2``."""
    _, counts = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def count_inversions(values: np.ndarray) -> int:
    """Pairs ``i < j`` with ``values[i] > values[j]`` (ties are not inversions), by bottom-up merge passes.

    Each pass merges runs of ``w`` sorted values pairwise; for a value ``v`` of a right run, the values of its left
    run greater than ``v`` are found with ``searchsorted`` on keys ``block * (n + 1) + rank``, which keep every run
    sorted and the runs in order, so one pass is a few vectorised O(n log n) operations (log n passes).
    """
    _, a = np.unique(np.asarray(values), return_inverse=True)
    a = a.astype(np.int64).ravel()
    n = a.size
    position = np.arange(n)
    inversions, width = 0, 1
    while width < n:
        block = position // (2 * width)
        right = (position % (2 * width)) >= width
        key = block * (n + 1) + a
        left_keys = key[~right]
        block_end = np.searchsorted(left_keys, block[right] * (n + 1) + n, side='right')
        not_greater = np.searchsorted(left_keys, key[right], side='right')
        inversions += int((block_end - not_greater).sum())
        a = np.sort(key) - block * (n + 1)
        width *= 2
    return inversions


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two rankings, over the positions where both values are finite.

    ``tau_b = (n_c - n_d) / sqrt((n_0 - n_1) (n_0 - n_2))`` with ``n_0 = n (n - 1) / 2`` pairs, ``n_1`` / ``n_2``
    pairs tied in ``x`` / ``y``, ``n_c`` / ``n_d`` concordant / discordant pairs (Kendall 1945). Knight (1966):
    after sorting by ``(x, y)`` the discordant pairs are the inversions of ``y``, and
    ``n_c - n_d = n_0 - n_1 - n_2 + n_3 - 2 n_d`` with ``n_3`` the pairs tied in both. ``nan`` with fewer than two
    pairs or a constant variable.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f'x and y must be 1-D of the same length, got shapes {x.shape} and {y.shape}')
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = x.size
    if n < 2:
        return math.nan
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    n0 = n * (n - 1) // 2
    n1, n2, n3 = _tied_pairs(x), _tied_pairs(y), _tied_pairs(x, y)
    denominator = math.sqrt(float(n0 - n1) * float(n0 - n2))
    if denominator == 0:
        return math.nan
    return (n0 - n1 - n2 + n3 - 2 * count_inversions(y)) / denominator


def tau_matrix(columns: Dict[str, np.ndarray], keys: Sequence[str]) -> np.ndarray:
    """``(len(keys), len(keys))`` matrix of tau-b between the given columns."""
    m = np.eye(len(keys))
    for i, a in enumerate(keys):
        for j in range(i + 1, len(keys)):
            m[i, j] = m[j, i] = kendall_tau_b(columns[a], columns[keys[j]])
    return m


def tau_noise(n: int) -> float:
    """Standard deviation of tau between independent rankings of ``n`` items (no ties)."""
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))) if n > 1 else math.nan


# -------------------------------------------------------------------------------------------------------- table
def load_study(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, List[str]]]:
    """``(numeric columns as float arrays, text columns as lists)``; empty cells read as NaN in numeric columns."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'study table not found: {path}')
    with open(path, newline='') as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = [r for r in reader if header and len(r) == len(header)]
    if not header or not rows:
        raise ValueError(f'{path} holds no model rows')
    numeric: Dict[str, np.ndarray] = {}
    text: Dict[str, List[str]] = {}
    for i, name in enumerate(header):
        cells = [r[i] for r in rows]
        try:
            numeric[name] = np.array([float(c) if c != '' else math.nan for c in cells], dtype=np.float64)
        except ValueError:
            text[name] = cells
    return numeric, text


def post_key(key: str) -> str:
    return key if key in UNCHANGED_BY_TS else f'post_{key}'


def family_bins(numeric: Dict[str, np.ndarray], family: str) -> List[int]:
    pattern = re.compile(rf'^{re.escape(family)}_(\d+)$')
    return sorted(int(m.group(1)) for m in map(pattern.match, numeric) if m)


# ------------------------------------------------------------------------------------------------------ figures
def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_tau(pre: np.ndarray, post: np.ndarray, labels: Sequence[str], path: str, n: int) -> None:
    plt = _pyplot()
    size = 0.42 * len(labels) + 2
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), constrained_layout=True)
    for ax, m, title in ((axes[0], pre, 'before TS'), (axes[1], post, 'after TS')):
        im = ax.imshow(m, cmap='RdBu_r', vmin=-1, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f'{m[i, j]:.2f}', ha='center', va='center', fontsize=5.5,
                            color='white' if abs(m[i, j]) > 0.6 else 'black')
        ax.set_title(f"Kendall's tau-b across {n} models, {title}")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bin_sensitivity(numeric: Dict[str, np.ndarray]) -> Dict[str, Dict[str, List[Tuple[int, float, float]]]]:
    """``{family: {'pre'|'post': [(B, tau(value_B, value_15), median value_B / value_15)]}}``."""
    out: Dict[str, Dict[str, List[Tuple[int, float, float]]]] = {}
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


def plot_bins(sensitivity, path: str) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for c, (family, stages) in enumerate(sensitivity.items()):
        for stage, style in (('pre', '-o'), ('post', '--s')):
            if stage not in stages:
                continue
            b, tau, ratio = zip(*stages[stage])
            label = f'{family} ({stage} TS)'
            axes[0].plot(b, tau, style, color=colors[c % len(colors)], label=label, ms=4)
            axes[1].plot(b, ratio, style, color=colors[c % len(colors)], label=label, ms=4)
    axes[0].set_ylabel(f'Kendall tau(value at B bins, value at {REFERENCE_BINS})')
    axes[1].set_ylabel(f'median over models of value_B / value_{REFERENCE_BINS}')
    for ax in axes:
        ax.set_xscale('log')
        ax.set_xlabel('number of bins B')
        ax.axvline(REFERENCE_BINS, color='grey', lw=0.8)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle('Bin-count sensitivity before (solid) and after (dashed) temperature scaling')
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _groups(text: Dict[str, List[str]], n: int) -> List[str]:
    return text.get('method', ['model'] * n)


def plot_accuracy(numeric, path: str) -> Dict[str, float]:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    taus = {}
    x = numeric['mIoU']
    for ax, key in zip(axes, ('ECE_15', 'NLL')):
        for stage, k, marker in (('pre', key, 'o'), ('post', post_key(key), 'x')):
            if k not in numeric:
                continue
            tau = kendall_tau_b(x, numeric[k])
            taus[f'mIoU~{k}'] = tau
            ax.scatter(x, numeric[k], marker=marker, label=f'{stage} TS (tau = {tau:.2f})')
        ax.set_xlabel('mIoU (%)')
        ax.set_ylabel(key + (' (%)' if key != 'NLL' else ''))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle('Accuracy vs calibration across models')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return taus


def plot_gain(numeric, text, path: str) -> Dict[str, float]:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    groups = _groups(text, len(numeric['ECE_15']))
    taus = {}
    for ax, key in zip(axes, ('ECE_15', 'NLL')):
        pre, post = numeric[key], numeric[f'post_{key}']
        gain = pre - post
        taus[key] = kendall_tau_b(pre, gain)
        for g in sorted(set(groups)):
            sel = np.array([x == g for x in groups])
            ax.scatter(pre[sel], gain[sel], label=g, s=22)
        lim = [0, float(np.nanmax(pre)) * 1.05]
        ax.plot(lim, lim, color='grey', lw=0.8, ls=':', label='gain = pre-TS value')
        ax.axhline(0, color='black', lw=0.8)
        unit = '' if key == 'NLL' else ' (%)'
        ax.set_xlabel(f'pre-TS {key}{unit}')
        ax.set_ylabel(f'TS gain: {key} - post_{key}{unit}')
        ax.set_title(f'tau(pre-TS {key}, gain) = {taus[key]:.2f}')
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle('What temperature scaling gains, model by model')
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return taus


# ------------------------------------------------------------------------------------------------------ summary
def _fmt(v: float, digits: int = 2) -> str:
    return '-' if v is None or not np.isfinite(v) else f'{v:.{digits}f}'


def _write_matrix(path: str, m: np.ndarray, labels: Sequence[str]) -> None:
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['metric', *labels])
        for label, row in zip(labels, m):
            w.writerow([label, *[_fmt(v, 4) for v in row]])


def _mean_offdiag(m: np.ndarray) -> np.ndarray:
    off = m.copy()
    np.fill_diagonal(off, np.nan)
    return np.nanmean(off, axis=1)


def summary_markdown(numeric, text, *, table: str, reproduce: Sequence[str], tau_pre: np.ndarray,
                     tau_post: np.ndarray, labels: Sequence[str], sensitivity, acc_taus, gain_taus) -> str:
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


def analyze(table: str, out_dir: str, reproduce: Sequence[str] = ()) -> Dict[str, str]:
    """Write every figure, the tau matrices and ``summary.md``; returns ``{name: path}``."""
    numeric, text = load_study(table)
    missing = [k for k in ('ECE_15', 'post_ECE_15', 'NLL', 'post_NLL', 'mIoU', 'T') if k not in numeric]
    if missing:
        raise KeyError(f'{table} lacks the columns {missing}: is it a calibration_study.py table?')
    n = len(numeric['ECE_15'])
    if n < 3:
        raise ValueError(f'{table} has {n} models; rank correlations need at least 3 (20 or more to be meaningful)')
    os.makedirs(out_dir, exist_ok=True)
    labels = [k for k in TAU_METRICS if k in numeric and post_key(k) in numeric]
    tau_pre = tau_matrix(numeric, labels)
    tau_post = tau_matrix(numeric, [post_key(k) for k in labels])
    paths = {name: osp.join(out_dir, name) for name in (
        'kendall_tau.png', 'kendall_tau_pre.csv', 'kendall_tau_post.csv', 'bin_sensitivity.png',
        'accuracy_vs_calibration.png', 'ts_gain.png', 'summary.md')}
    plot_tau(tau_pre, tau_post, labels, paths['kendall_tau.png'], n)
    _write_matrix(paths['kendall_tau_pre.csv'], tau_pre, labels)
    _write_matrix(paths['kendall_tau_post.csv'], tau_post, labels)
    sensitivity = bin_sensitivity(numeric)
    plot_bins(sensitivity, paths['bin_sensitivity.png'])
    acc_taus = plot_accuracy(numeric, paths['accuracy_vs_calibration.png'])
    gain_taus = plot_gain(numeric, text, paths['ts_gain.png'])
    rel_table = osp.relpath(table, out_dir)
    summary = summary_markdown(numeric, text, table=rel_table, reproduce=reproduce, tau_pre=tau_pre,
                               tau_post=tau_post, labels=labels, sensitivity=sensitivity, acc_taus=acc_taus,
                               gain_taus=gain_taus)
    with open(paths['summary.md'], 'w') as f:
        f.write(summary)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('table', help='the CSV written by tools/calibration_study.py')
    parser.add_argument('--out-dir', required=True, help='folder of the figures and summary.md')
    parser.add_argument('--reproduce', action='append', default=[],
                        help='a command line shown at the top of summary.md (repeatable)')
    args = parser.parse_args(argv)
    paths = analyze(args.table, args.out_dir, args.reproduce)
    print('[analyze] wrote ' + ', '.join(sorted(osp.basename(p) for p in paths.values())) + f' into {args.out_dir}')


if __name__ == '__main__':
    main()
