"""Reliability diagrams drawn from per-bin statistics (matplotlib is imported only when drawing).

The input is the per-bin record written by :class:`calibseg.engine.hooks.ReliabilityDiagramHook`:
``{'edges': [B+1 floats], 'count': [B], 'confidence': [B], 'accuracy': [B]}`` where ``confidence`` and
``accuracy`` are the mean confidence and the accuracy (or the frequency of the class, for a classwise record)
of each bin, ``None`` for empty bins.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

__all__ = ['plot_reliability_diagram', 'plot_classwise_reliability']


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
