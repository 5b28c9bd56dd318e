"""Reliability diagrams drawn from per-bin statistics (matplotlib is imported only when drawing).

The input is the per-bin record written by :class:`calibseg.engine.hooks.ReliabilityDiagramHook`:
``{'edges': [B+1 floats], 'count': [B], 'confidence': [B], 'accuracy': [B]}`` where ``confidence`` and
``accuracy`` are the mean confidence and the accuracy (or the frequency of the class, for a classwise record)
of each bin, ``None`` for empty bins. :func:`plot_distance_bands` draws the ``distance_bands`` record of the
same file (calibration against the distance to the nearest label boundary).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

__all__ = ['plot_reliability_diagram', 'plot_classwise_reliability', 'plot_distance_bands', 'band_labels']


def _validate(record: Mapping) -> None:
    missing = [k for k in ('edges', 'count', 'confidence', 'accuracy') if k not in record]
    if missing:
        raise KeyError(f'per-bin record lacks {missing}; expected edges/count/confidence/accuracy')
    if len(record['edges']) != len(record['count']) + 1:
        raise ValueError(f"per-bin record: {len(record['edges'])} edges for {len(record['count'])} bins")


def _draw_bins(ax, record: Mapping, *, color: str = '#3b6ea8') -> None:
    edges = record['edges']
    lefts = edges[:-1]
    widths = [hi - lo for lo, hi in zip(edges[:-1], edges[1:])]
    acc = [a if a is not None else 0.0 for a in record['accuracy']]
    conf = [c if c is not None else 0.0 for c in record['confidence']]
    ax.bar(lefts, acc, width=widths, align='edge', color=color, edgecolor='white', linewidth=0.4,
           label='accuracy')
    gaps = [c - a if n else 0.0 for a, c, n in zip(acc, conf, record['count'])]
    ax.bar(lefts, gaps, bottom=acc, width=widths, align='edge', color='#d9534f', alpha=0.35,
           edgecolor='#d9534f', linewidth=0.4, label='gap to confidence')
    ax.plot([0, 1], [0, 1], '--', color='gray', linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)


def plot_reliability_diagram(record: Mapping, path: str, *, title: str = '',
                             scalars: Optional[Mapping[str, float]] = None) -> str:
    """Draw a top-label reliability diagram with the confidence histogram beneath it into ``path`` (PNG).

    Args:
        record: per-bin statistics (see the module docstring).
        path: output file.
        title: figure title.
        scalars: optional metrics printed in the corner (e.g. ``{'ECE_15': 3.2}``).

    Returns:
        ``path``.
    """
    _validate(record)
    import matplotlib

    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.2, 5.6), sharex=True,
                                   gridspec_kw=dict(height_ratios=[3, 1]))
    _draw_bins(ax, record)
    ax.set_ylabel('accuracy')
    ax.legend(loc='upper left', fontsize=8)
    if scalars:
        text = '\n'.join(f'{k} = {v:.3g}' for k, v in scalars.items())
        ax.text(0.97, 0.03, text, transform=ax.transAxes, ha='right', va='bottom', fontsize=8,
                bbox=dict(facecolor='white', alpha=0.8, edgecolor='none'))
    ax.set_title(title, fontsize=9)
    edges = record['edges']
    total = max(sum(record['count']), 1)
    hist.bar(edges[:-1], [n / total for n in record['count']], width=[b - a for a, b in zip(edges, edges[1:])],
             align='edge', color='#777777')
    hist.set_yscale('log')
    hist.set_xlabel('confidence')
    hist.set_ylabel('fraction of pixels')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_classwise_reliability(records: Dict[str, Mapping], path: str, *, title: str = '',
                               max_classes: Optional[int] = None,
                               order: Optional[Sequence[str]] = None) -> str:
    """Draw one small reliability diagram per class (probability of the class vs its frequency) in a grid."""
    names = list(order) if order is not None else list(records)
    if max_classes is not None:
        names = names[:max_classes]
    if not names:
        raise ValueError('no classwise records to draw')
    for name in names:
        _validate(records[name])
    import matplotlib

    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    cols = min(6, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.1 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis('off')
    for ax, name in zip(axes.flat, names):
        _draw_bins(ax, records[name], color='#5a9e6f')
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def band_labels(lower: Sequence[Optional[float]], upper: Sequence[Optional[float]]) -> list:
    """Tick labels of distance bands: ``'≤2'``, ``'2–5'``, ``'>5'`` (edges in pixels).

    Example:
        >>> band_labels([None, 2.0, 5.0], [2.0, 5.0, None])
        ['≤2', '2–5', '>5']
    """
    def fmt(v: float) -> str:
        return f'{v:g}'

    out = []
    for lo, hi in zip(lower, upper):
        out.append(f'≤{fmt(hi)}' if lo is None else f'>{fmt(lo)}' if hi is None else f'{fmt(lo)}–{fmt(hi)}')
    return out


def plot_distance_bands(record: Mapping, path: str, *, title: str = '') -> str:
    """Draw ECE, accuracy and mean confidence (percent) per distance band, with the pixel share per band.

    Args:
        record: ``{'lower': [...], 'upper': [...], 'count': [...], 'ECE': [...], 'accuracy': [...],
            'confidence': [...]}`` (one entry per band, ``None`` for the first lower / last upper edge and for the
            values of empty bands), as the calibration metrics publish it under ``distance_bands``.
        path: output PNG.
        title: figure title.

    Returns:
        ``path``.
    """
    missing = [k for k in ('lower', 'upper', 'count', 'ECE', 'accuracy', 'confidence') if k not in record]
    if missing:
        raise KeyError(f'distance-band record lacks {missing}')
    n = len(record['count'])
    if n == 0 or any(len(record[k]) != n for k in ('lower', 'upper', 'ECE', 'accuracy', 'confidence')):
        raise ValueError('distance-band record: every list must have one entry per band (at least one band)')
    import matplotlib

    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt

    xs = list(range(n))
    nan = float('nan')

    def values(key: str) -> list:
        return [nan if v is None else v for v in record[key]]

    fig, (ax, share) = plt.subplots(2, 1, figsize=(5.0, 5.0), sharex=True, gridspec_kw=dict(height_ratios=[3, 1]))
    ax.plot(xs, values('ECE'), 'o-', color='#d9534f', label='ECE_15')
    ax.plot(xs, values('accuracy'), 's-', color='#3b6ea8', label='accuracy')
    ax.plot(xs, values('confidence'), '^--', color='#5a9e6f', label='mean confidence')
    ax.set_ylabel('percent')
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc='center right')
    ax.set_title(title, fontsize=9)
    total = max(sum(record['count']), 1)
    share.bar(xs, [100.0 * c / total for c in record['count']], color='#777777')
    share.set_ylabel('% pixels')
    share.set_xticks(xs)
    share.set_xticklabels(band_labels(record['lower'], record['upper']), fontsize=8)
    share.set_xlabel('distance to the nearest label boundary (px)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
