"""Figures of the calibration analysis report, drawn from numbers already computed (matplotlib imported lazily).

Each function takes a part of :meth:`calibseg.analysis.CalibrationAnalysis.results` (or the shift sweep's table)
and writes one PNG; none computes a statistic of its own.
"""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence

import numpy as np

__all__ = ['plot_per_class', 'plot_image_ece', 'plot_gallery', 'plot_shift_curves', 'label_palette']


def _pyplot():
    import matplotlib

    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    return plt


def label_palette(num_classes: int) -> np.ndarray:
    """``(num_classes + 1, 3)`` uint8 colours: a fixed, distinguishable colour per class, white for ignored (last).

    Example:
        >>> label_palette(3).shape
        (4, 3)
    """
    import matplotlib

    cmap = matplotlib.colormaps['tab20']
    colours = [np.array(cmap(i % 20)[:3]) * 255 for i in range(num_classes)]
    colours.append(np.array([255.0, 255.0, 255.0]))
    return np.stack(colours).astype(np.uint8)


def plot_per_class(classes: Mapping[str, list], path: str, *, title: str = '', max_classes: int = 40) -> str:
    """Bars of per-class top-label ECE_15 (pixels predicted as the class), worst first, with pixel counts.

    Args:
        classes: ``{'name', 'ECE_15', 'predicted_pixels', ...}`` lists (``CalibrationAnalysis.classes()``).
        path: output PNG.
        title: figure title.
        max_classes: draw at most this many classes (the worst).
    """
    order = [k for k in np.argsort([-(e if e is not None else -1.0) for e in classes['ECE_15']], kind='stable')
             if classes['ECE_15'][k] is not None][:max_classes]
    if not order:
        raise ValueError('no class has predicted pixels: nothing to draw')
    plt = _pyplot()
    names = [str(classes['name'][k]) for k in order]
    ece = [classes['ECE_15'][k] for k in order]
    pixels = [classes['predicted_pixels'][k] for k in order]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.38 * len(order) + 1.5), 3.6))
    bars = ax.bar(range(len(order)), ece, color='#d9534f')
    for bar, n in zip(bars, pixels):
        ax.annotate(_short_count(n), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha='center',
                    va='bottom', fontsize=6, rotation=90, xytext=(0, 2), textcoords='offset points')
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(names, rotation=60, ha='right', fontsize=7)
    ax.set_ylabel('ECE_15 of the class\'s predictions (%)')
    ax.set_ylim(0, max(ece) * 1.25 + 1e-9)
    ax.set_title(title or 'per-class calibration (numbers: pixels predicted as the class)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _short_count(n: int) -> str:
    for unit, size in (('G', 1e9), ('M', 1e6), ('k', 1e3)):
        if n >= size:
            return f'{n / size:.1f}{unit}'
    return str(int(n))


def plot_image_ece(values: Sequence[Optional[float]], path: str, *, title: str = '',
                   marks: Optional[Mapping[str, float]] = None) -> str:
    """Histogram of per-image ECE_15 (percent); ``marks`` draws labelled vertical lines (e.g. the pooled ECE)."""
    data = [v for v in values if v is not None and not math.isnan(v)]
    if not data:
        raise ValueError('no image with labelled pixels: nothing to draw')
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    ax.hist(data, bins=min(30, max(5, len(data) // 3)), color='#3b6ea8', edgecolor='white')
    for (label, x), colour in zip((marks or {}).items(), ('#d9534f', '#5a9e6f', '#f0ad4e')):
        ax.axvline(x, color=colour, linestyle='--', linewidth=1.2, label=f'{label} = {x:.2f}')
    if marks:
        ax.legend(fontsize=8)
    ax.set_xlabel('per-image ECE_15 (%)')
    ax.set_ylabel('images')
    ax.set_title(title or f'distribution of per-image ECE ({len(data)} images)', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gallery(records: Sequence[Mapping], path: str, *, num_classes: int, ignore_index: int = 255,
                 titles: Optional[Sequence[str]] = None) -> str:
    """One row per image: image, prediction, confidence map, error map (wrong pixels red, ignored grey).

    Args:
        records: dicts with ``prediction``, ``confidence``, ``labels`` (2-D arrays of one size) and optionally
            ``image`` (``(H, W, 3)`` RGB uint8 of the same size).
        path: output PNG.
        num_classes: classes (colours of the prediction).
        ignore_index: label of ignored pixels.
        titles: one caption per row.
    """
    if not records:
        raise ValueError('no image to draw')
    plt = _pyplot()
    palette = label_palette(num_classes)
    rows = len(records)
    fig, axes = plt.subplots(rows, 4, figsize=(10.0, 2.5 * rows), squeeze=False)
    for r, rec in enumerate(records):
        pred = np.asarray(rec['prediction']).astype(np.int64)
        labels = np.asarray(rec['labels']).astype(np.int64)
        conf = np.asarray(rec['confidence']).astype(np.float32)
        ignored = labels == ignore_index
        error = np.zeros(labels.shape + (3,), np.uint8)
        error[(pred != labels) & ~ignored] = (217, 83, 79)
        error[(pred == labels) & ~ignored] = (235, 235, 235)
        error[ignored] = (150, 150, 150)
        image = rec.get('image')
        panels = [image if image is not None else palette[np.where(ignored, num_classes, labels)],
                  palette[np.clip(pred, 0, num_classes - 1)], conf, error]
        names = ['image' if image is not None else 'labels', 'prediction', 'confidence', 'errors (red)']
        for c, (ax, panel, name) in enumerate(zip(axes[r], panels, names)):
            if c == 2:
                shown = ax.imshow(panel, cmap='magma', vmin=0.0, vmax=1.0)
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            else:
                ax.imshow(panel, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
        if titles:
            axes[r][0].set_ylabel(titles[r], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_shift_curves(table: Mapping[str, Mapping[int, Optional[float]]], path: str, *, ylabel: str,
                      title: str = '', clean: Optional[Mapping[str, float]] = None) -> str:
    """Lines of a value against severity, one per method: ``table[method][severity] -> value``.

    ``clean`` draws each method's clean-data value at severity 0.
    """
    if not table:
        raise ValueError('no method to draw')
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for method, curve in table.items():
        xs: List[int] = sorted(curve)
        ys = [curve[s] for s in xs]
        if clean and method in clean:
            xs, ys = [0] + xs, [clean[method]] + ys
        ax.plot(xs, [math.nan if y is None else y for y in ys], 'o-', label=method, linewidth=1.3, markersize=4)
    ax.set_xticks(sorted({int(s) for curve in table.values() for s in curve} | ({0} if clean else set())))
    ax.set_xlabel('severity (0 = clean)')
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
