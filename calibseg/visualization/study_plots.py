"""Figures of a calibration study, drawn from statistics already computed by :mod:`calibseg.study.analysis`
(nothing is computed here; matplotlib is imported only when drawing). Each figure is written atomically."""
from __future__ import annotations

import os
import os.path as osp
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = ['plot_tau', 'plot_bins', 'plot_accuracy', 'plot_gain', 'plot_robustness', 'plot_cross_dataset']

def _pyplot():
    import matplotlib

    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    return plt

def _save(fig, path: str) -> str:
    plt = _pyplot()
    fmt = osp.splitext(path)[1].lstrip('.') or 'png'
    tmp = osp.join(osp.dirname(osp.abspath(path)), f'.{osp.basename(path)}.tmp{os.getpid()}')
    try:
        fig.savefig(tmp, dpi=110, format=fmt)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if osp.exists(tmp):
            os.remove(tmp)
    return path

def plot_tau(tau_pre: np.ndarray, tau_post: np.ndarray, labels: Sequence[str], *, n_models: int, path: str) -> str:
    """Two annotated heat maps of Kendall tau-b matrices (before / after temperature scaling)."""
    plt = _pyplot()
    size = 0.42 * len(labels) + 2
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1.5, size), constrained_layout=True)
    for ax, m, title in ((axes[0], tau_pre, 'before TS'), (axes[1], tau_post, 'after TS')):
        im = ax.imshow(m, cmap='RdBu_r', vmin=-1, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if np.isfinite(m[i, j]):
                    ax.text(j, i, f'{m[i, j]:.2f}', ha='center', va='center', fontsize=5.5,
                            color='white' if abs(m[i, j]) > 0.6 else 'black')
        ax.set_title(f"Kendall's tau-b across {n_models} models, {title}")
    fig.colorbar(im, ax=axes, shrink=0.8)
    return _save(fig, path)

def plot_bins(sensitivity: Mapping[str, Mapping[str, List[Tuple[int, float, float]]]], *, reference_bins: int,
              path: str) -> str:
    """Tau to the reference bin count and the median value ratio against the bin count ``B``, per family, pre
    (solid) and post (dashed) TS; ``sensitivity`` as :func:`calibseg.study.analysis.bin_sensitivity` returns."""
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
    axes[0].set_ylabel(f'Kendall tau(value at B bins, value at {reference_bins})')
    axes[1].set_ylabel(f'median over models of value_B / value_{reference_bins}')
    for ax in axes:
        ax.set_xscale('log')
        ax.set_xlabel('number of bins B')
        ax.axvline(reference_bins, color='grey', lw=0.8)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle('Bin-count sensitivity before (solid) and after (dashed) temperature scaling')
    return _save(fig, path)

def plot_accuracy(columns: Mapping[str, np.ndarray], taus: Mapping[str, float], *, path: str,
                  keys: Sequence[str] = ('ECE_15', 'NLL')) -> str:
    """mIoU against each of ``keys`` pre and post TS, one panel per key; the legend shows ``taus['mIoU~<col>']``
    (:func:`calibseg.study.analysis.accuracy_taus`)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.4), constrained_layout=True, squeeze=False)
    x = columns['mIoU']
    for ax, key in zip(axes[0], keys):
        for stage, k, marker in (('pre', key, 'o'), ('post', f'post_{key}', 'x')):
            if k not in columns:
                continue
            ax.scatter(x, columns[k], marker=marker, label=f'{stage} TS (tau = {taus[f"mIoU~{k}"]:.2f})')
        ax.set_xlabel('mIoU (%)')
        ax.set_ylabel(key + (' (%)' if key != 'NLL' else ''))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle('Accuracy vs calibration across models')
    return _save(fig, path)

def plot_gain(columns: Mapping[str, np.ndarray], gains: Mapping[str, Tuple[np.ndarray, float]],
              groups: Sequence[str], *, path: str) -> str:
    """TS gain against the pre-TS value, one panel per key of ``gains`` (``{key: (gain per model, tau)}``, as
    :func:`calibseg.study.analysis.ts_gains` returns), points coloured by ``groups`` (e.g. the method)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(gains), figsize=(5.5 * len(gains), 4.4), constrained_layout=True,
                             squeeze=False)
    for ax, (key, (gain, tau)) in zip(axes[0], gains.items()):
        pre = columns[key]
        for g in sorted(set(groups)):
            sel = np.array([x == g for x in groups])
            ax.scatter(pre[sel], gain[sel], label=g, s=22)
        lim = [0, float(np.nanmax(pre)) * 1.05]
        ax.plot(lim, lim, color='grey', lw=0.8, ls=':', label='gain = pre-TS value')
        ax.axhline(0, color='black', lw=0.8)
        unit = '' if key == 'NLL' else ' (%)'
        ax.set_xlabel(f'pre-TS {key}{unit}')
        ax.set_ylabel(f'TS gain: {key} - post_{key}{unit}')
        ax.set_title(f'tau(pre-TS {key}, gain) = {tau:.2f}')
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle('What temperature scaling gains, model by model')
    return _save(fig, path)


def _tau_bars(ax, labels: Sequence[str], series: Sequence[Tuple[str, Sequence[float]]], noise: float,
              title: str) -> None:
    """Horizontal bars of tau per label, one bar per series, with the +-noise and +-2 noise band shaded."""
    y = np.arange(len(labels))
    height = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series):
        ax.barh(y + (i - (len(series) - 1) / 2) * height, values, height=height, label=name)
    for k, alpha in ((2, 0.12), (1, 0.2)):
        ax.axvspan(-k * noise, k * noise, color='grey', alpha=alpha, lw=0)
    ax.axvline(0, color='black', lw=0.8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Kendall's tau-b (grey: 1 and 2 noise levels)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis='x')
    ax.legend(fontsize=7)

def plot_robustness(columns: Mapping[str, np.ndarray], taus: Mapping[str, Mapping[str, float]], *, n_models: int,
                    noise: float, path: str) -> str:
    """Left: tau(mIoU drop, metric) before and after TS per calibration metric (``taus`` as
    :func:`calibseg.study.analysis.robustness_taus` returns); right: mIoU drop against ECE_15 pre and post TS."""
    plt = _pyplot()
    labels = [k for k in taus if k != '_']
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.3 * len(labels) + 3), constrained_layout=True)
    _tau_bars(axes[0], labels, [('pre TS', [taus[k]['drop~pre'] for k in labels]),
                                ('post TS', [taus[k]['drop~post'] for k in labels])], noise,
              f'tau(mIoU drop, metric) across {n_models} models')
    ax = axes[1]
    for key, marker, stage in (('ECE_15', 'o', 'pre'), ('post_ECE_15', 'x', 'post')):
        if key in columns and 'ECE_15' in taus:
            ax.scatter(columns['mIoU_drop'], columns[key], marker=marker,
                       label=f"{stage} TS (tau = {taus['ECE_15'][f'drop~{stage}']:.2f})")
    ax.set_xlabel('mIoU drop under corruption (points)')
    ax.set_ylabel('clean ECE_15 (%)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle('Robustness vs calibration: robust models are better calibrated where tau > 0')
    return _save(fig, path)

def plot_cross_dataset(cross: Mapping[str, Any], *, noise: float, names: Tuple[str, str], path: str) -> str:
    """Left: tau of the recipes' values between two datasets per metric, pre and post TS (``cross`` as
    :func:`calibseg.study.analysis.cross_dataset_taus` returns); right: ECE_15 on one dataset against the other,
    one labelled point per recipe."""
    plt = _pyplot()
    taus = cross['taus']
    labels = list(taus)
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.3 * len(labels) + 3), constrained_layout=True)
    _tau_bars(axes[0], labels, [('pre TS', [taus[k][0] for k in labels]), ('post TS', [taus[k][1] for k in labels])],
              noise, f"tau({names[0]}, {names[1]}) across {cross['n']} recipes")
    ax = axes[1]
    if 'ECE_15' in cross['values']:
        a, b, pa, pb = cross['values']['ECE_15']
        ax.scatter(a, b, marker='o', label=f"pre TS (tau = {taus['ECE_15'][0]:.2f})")
        ax.scatter(pa, pb, marker='x', label=f"post TS (tau = {taus['ECE_15'][1]:.2f})")
        widths = {c for _, c in cross['recipes']}
        for (method, channels), x, y in zip(cross['recipes'], a, b):
            ax.annotate(method if len(widths) == 1 else f'{method}-c{channels}', (x, y), fontsize=6,
                        xytext=(2, 2), textcoords='offset points')
    ax.set_xlabel(f'ECE_15 (%), {names[0]}')
    ax.set_ylabel(f'ECE_15 (%), {names[1]}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle('Does a recipe calibrate alike on two datasets? (final checkpoints)')
    return _save(fig, path)
