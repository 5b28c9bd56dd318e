"""``report.md`` and its figures from the analysis results (numbers computed in :mod:`.accumulator`).

The report reads on its own and on a Git host (figures are PNGs next to it, linked relatively). Every number it
shows is in ``results.json`` too.
"""
from __future__ import annotations

import math
import os
import os.path as osp
import statistics
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..utils.files import atomic_write_text

__all__ = ['write_report', 'summary_lines', 'headline_rows', 'shift_means']

_MULTICLASS_ROWS = (('mIoU', 'mIoU (%)', 2), ('aAcc', 'pixel acc. (%)', 2), ('ECE_15', 'ECE_15 (%)', 2),
                    ('OE_15', 'OE_15 (%)', 2), ('UE_15', 'UE_15 (%)', 2), ('cwCE_15', 'cwCE_15 (%)', 3),
                    ('MCE_15', 'MCE_15 (%)', 1), ('smECE', 'smECE (%)', 2), ('NLL', 'NLL', 4), ('Brier', 'Brier', 4),
                    ('AUROC', 'AUROC (%)', 2), ('FPR95', 'FPR95 (%)', 2), ('AUPR_err', 'AUPR_err (%)', 2))
_BINARY_ROWS = (('MAE', 'MAE', 4), ('maxF', 'max-F', 4), ('Sm', 'S-measure', 4), ('mIoU', 'mIoU (%)', 2),
                ('ECE_10', 'ECE_10 (%)', 2), ('ECE_15', 'ECE_15 (%)', 2), ('OE_15', 'OE_15 (%)', 2),
                ('UE_15', 'UE_15 (%)', 2), ('cwCE_15', 'cwCE_15 (%)', 3), ('NLL', 'NLL', 4), ('Brier', 'Brier', 4),
                ('AUROC', 'AUROC (%)', 2), ('FPR95', 'FPR95 (%)', 2))
_SHIFT_KEYS = ('ECE_15', 'mIoU', 'OE_15', 'cwCE_15', 'NLL', 'Brier', 'AUROC', 'FPR95')


def _fmt(value: Optional[float], digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '–'
    return f'{value:.{digits}f}'


def headline_rows(results: Mapping[str, Any]) -> List[tuple]:
    """``(key, title, digits)`` of the headline table for the head type."""
    return list(_BINARY_ROWS if results['binary'] else _MULTICLASS_ROWS)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = 'r') -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(['---'] + [('---:' if align == 'r' else '---')] * (
        len(header) - 1)) + '|']
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    return lines


def shift_means(shift: Mapping[str, Any], key: str, *, part: str = 'headline') -> Dict[str, Dict[int, float]]:
    """``{method: {severity: mean over corruptions of key}}`` (corruptions where the key is missing are skipped).

    Example:
        >>> cell = lambda e: {'raw': {'headline': {'ECE_15': e}}}
        >>> shift_means({'fog': {'1': cell(2.0)}, 'snow': {'1': cell(4.0)}}, 'ECE_15')
        {'raw': {1: 3.0}}
    """
    values: Dict[str, Dict[int, List[float]]] = {}
    for per_severity in shift.values():
        for severity, methods in per_severity.items():
            for method, record in methods.items():
                value = record.get(part, {}).get(key)
                if value is not None and math.isfinite(value):
                    values.setdefault(method, {}).setdefault(int(severity), []).append(value)
    return {m: {s: sum(v) / len(v) for s, v in sorted(per.items())} for m, per in values.items()}


def summary_lines(results: Mapping[str, Any]) -> List[str]:
    """A few sentences on what the numbers say (over/under-confidence, boundaries, classes, images, fixes)."""
    lines: List[str] = []
    raw = results['methods']['uncalibrated']
    head = raw['headline']
    oe, ue, ece = head.get('OE_15'), head.get('UE_15'), head.get('ECE_15')
    if oe is not None and ue is not None:
        kind = 'over-confident' if oe > ue else 'under-confident' if ue > oe else 'balanced'
        lines.append(f'**{kind}**: OE_15 {_fmt(oe)} % {">" if oe > ue else "<=" } UE_15 {_fmt(ue)} % '
                     f'(ECE_15 {_fmt(ece)} %, accuracy {_fmt(head.get("Acc"))} %, mean confidence '
                     f'{_fmt(_mean_conf(raw))} %).')
    b = raw['boundary']
    if b.get('boundary_error_share') is not None and b.get('boundary_frac') is not None:
        lines.append(f'{_fmt(b["boundary_error_share"], 0)} % of the calibration error lies within '
                     f'{b["boundary_width"]:g} px of a label boundary, which holds {_fmt(b["boundary_frac"], 0)} % '
                     f'of the pixels (boundary ECE_15 {_fmt(b["boundary_ECE_15"])} % vs interior '
                     f'{_fmt(b["interior_ECE_15"])} %; accuracy {_fmt(b["boundary_Acc"], 1)} % vs '
                     f'{_fmt(b["interior_Acc"], 1)} %).')
    classes = raw['classes']
    total = sum(classes['predicted_pixels']) or 1
    ranked = sorted((e, n, name) for e, n, name in zip(classes['ECE_15'], classes['predicted_pixels'],
                                                       classes['name'])
                    if e is not None and n >= 0.001 * total)
    if ranked:
        worst = ', '.join(f'{name} ({_fmt(e, 1)} %)' for e, _, name in ranked[::-1][:3])
        lines.append(f'Worst-calibrated predicted classes (ECE_15 of their pixels): {worst}.')
    per_image = [r['ECE_15'] for r in raw['images'] if r['ECE_15'] is not None]
    if per_image:
        q90 = sorted(per_image)[int(0.9 * (len(per_image) - 1))]
        lines.append(f'Per image, ECE_15 has median {_fmt(statistics.median(per_image))} % and 90th percentile '
                     f'{_fmt(q90)} % over {len(per_image)} images (pooled: {_fmt(ece)} %).')
    others = {m: r['headline'].get('ECE_15') for m, r in results['methods'].items() if m != 'uncalibrated'}
    others = {m: v for m, v in others.items() if v is not None}
    if others and ece is not None:
        best = min(others, key=others.get)
        verdict = 'lowers' if others[best] < ece else 'does not lower'
        extra = ''
        temperature = results['calibrators'].get(best, {}).get('temperature')
        if temperature is not None:
            extra = f' (T = {temperature:.3f})'
        lines.append(f'Best post-hoc calibrator: **{best}**{extra}, which {verdict} ECE_15 from {_fmt(ece)} % to '
                     f'{_fmt(others[best])} % (NLL {_fmt(head.get("NLL"), 4)} → '
                     f'{_fmt(results["methods"][best]["headline"].get("NLL"), 4)}).')
    shift = results.get('shift')
    if shift:
        means = shift_means(shift, 'ECE_15')
        raw_means = means.get('uncalibrated', {})
        if raw_means:
            top = max(raw_means)
            lines.append(f'Under corruption, the raw model\'s ECE_15 grows from {_fmt(ece)} % (clean) to '
                         f'{_fmt(raw_means[top])} % (mean over {len(shift)} corruptions at severity {top}).')
            at_top = {m: v[top] for m, v in means.items() if top in v}
            if len(at_top) > 1:
                best = min(at_top, key=at_top.get)
                lines.append(f'At severity {top} the lowest mean ECE_15 is **{best}**\'s ({_fmt(at_top[best])} %).')
    return lines


def _mean_conf(method_results: Mapping[str, Any]) -> Optional[float]:
    rel = method_results['reliability']
    n = sum(rel['count'])
    if not n:
        return None
    return 100.0 * sum(c * (v or 0.0) for c, v in zip(rel['count'], rel['confidence'])) / n


def write_report(results: Dict[str, Any], out_dir: str, *, worst: Optional[Mapping[str, Sequence[Any]]] = None
                 ) -> str:
    """Draw the figures into ``out_dir`` and write ``report.md`` (atomically); returns its path."""
    from ..visualization import plot_distance_bands, plot_reliability_diagram
    from ..visualization.analysis_plots import plot_gallery, plot_image_ece, plot_per_class, plot_shift_curves

    os.makedirs(out_dir, exist_ok=True)
    figures: Dict[str, str] = {}

    def figure(name: str, draw) -> None:
        path = osp.join(out_dir, name)
        tmp = osp.join(out_dir, f'.{name}.tmp.png')
        draw(tmp)
        os.replace(tmp, path)
        figures[name] = name

    methods = results['methods']
    raw = methods['uncalibrated']
    for name, res in methods.items():
        h = res['headline']
        figure(f'reliability_{name}.png', lambda p, res=res, h=h, name=name: plot_reliability_diagram(
            res['reliability'], p, title=f'{name}: top-label reliability (15 bins)',
            scalars={k: h[k] for k in ('ECE_15', 'OE_15', 'UE_15') if h.get(k) is not None}))
    figure('per_class.png', lambda p: plot_per_class(raw['classes'], p))
    figure('boundary_distance.png', lambda p: plot_distance_bands(
        raw['bands'], p, title='calibration vs distance to the nearest label boundary (uncalibrated)'))
    figure('image_ece.png', lambda p: plot_image_ece(
        [r['ECE_15'] for r in raw['images']], p, marks={'pooled ECE_15': raw['headline'].get('ECE_15') or 0.0}))
    gallery = list((worst or {}).get('uncalibrated', []))
    if gallery:
        figure('worst_images.png', lambda p: plot_gallery(
            [g.maps for g in gallery], p, num_classes=len(results['class_names']),
            ignore_index=results['ignore_index'],
            titles=[f'{osp.basename(g.img_path)}\nECE_15 {g.ece:.1f} %' for g in gallery]))
    shift = results.get('shift') or {}
    if shift:
        ece_means = shift_means(shift, 'ECE_15')
        acc_key = 'mIoU'
        acc_means = shift_means(shift, acc_key)
        clean_ece = {m: r['headline'].get('ECE_15') for m, r in methods.items()}
        clean_acc = {m: r['headline'].get(acc_key) for m, r in methods.items()}
        figure('shift_ece.png', lambda p: plot_shift_curves(ece_means, p, ylabel='ECE_15 (%), mean over corruptions',
                                                             title='calibration under corruption', clean=clean_ece))
        figure('shift_miou.png', lambda p: plot_shift_curves(acc_means, p, ylabel='mIoU (%), mean over corruptions',
                                                              title='accuracy under corruption', clean=clean_acc))
    text = _markdown(results, figures, gallery)
    path = osp.join(out_dir, 'report.md')
    atomic_write_text(path, text)
    return path


def _markdown(results: Mapping[str, Any], figures: Mapping[str, str], gallery: Sequence[Any]) -> str:
    methods = results['methods']
    raw = methods['uncalibrated']
    names = list(methods)
    out: List[str] = [f'# Calibration analysis: `{osp.basename(str(results["config"]))}`', '']
    out += [f'- checkpoint: `{osp.basename(results["checkpoint"])}`; {results["test_images"]} test images; '
            f'{results["num_classes"]} output channel(s); {results["processes"]} process(es)',
            f'- post-hoc calibrators fitted on: {results["fit_split"] or "(none requested)"}', '']
    out += ['## Summary', ''] + [f'- {line}' for line in summary_lines(results)] + ['']
    out += ['## Headline', '']
    rows = []
    for key, title, digits in headline_rows(results):
        if all(methods[m]['headline'].get(key) is None for m in names):
            continue
        rows.append([title] + [_fmt(methods[m]['headline'].get(key), digits) for m in names])
    out += _table(['metric'] + names, rows) + ['']
    cal_rows = [[name, info.get('method', ''), _fmt(info.get('temperature', info.get('temperature_mean')), 3),
                 str(info.get('fit_images', '')), _fmt(info.get('fit_seconds'), 1)]
                for name, info in results['calibrators'].items()]
    if cal_rows:
        out += _table(['calibrator', 'class', 'T (mean for LTS)', 'fit images', 'fit s'], cal_rows) + ['']
    out += ['## Reliability', '', ' '.join(f'![{n}]({figures[f"reliability_{n}.png"]})' for n in names), '',
            'Bars: accuracy per confidence bin; red: the gap to the bin\'s mean confidence; below: the share of '
            'pixels per bin (log scale).', '']
    out += ['## Per class', '', f'![per-class ECE]({figures["per_class.png"]})', '']
    classes = raw['classes']
    order = sorted(range(len(classes['name'])), key=lambda k: -(classes['ECE_15'][k] or -1.0))[:8]
    out += _table(['class', 'ECE_15 of its predictions (%)', 'mean confidence (%)', 'precision (%)', 'IoU (%)',
                   'predicted px', 'labelled px'],
                  [[str(classes['name'][k]), _fmt(classes['ECE_15'][k]), _fmt(classes['confidence'][k]),
                    _fmt(classes['precision'][k]), _fmt(classes['IoU'][k]), str(classes['predicted_pixels'][k]),
                    str(classes['labelled_pixels'][k])] for k in order]) + ['']
    out += ['## Near label boundaries', '', f'![distance bands]({figures["boundary_distance.png"]})', '']
    w = results['boundary_width']
    brow = []
    for m in names:
        b = methods[m]['boundary']
        brow.append([m, _fmt(b['boundary_ECE_15']), _fmt(b['interior_ECE_15']), _fmt(b['boundary_Acc']),
                     _fmt(b['interior_Acc']), _fmt(b['boundary_frac'], 1), _fmt(b['boundary_error_share'], 1)])
    out += _table(['method', f'ECE_15 ≤ {w:g} px', f'ECE_15 > {w:g} px', f'acc. ≤ {w:g} px', f'acc. > {w:g} px',
                   '% pixels ≤ w', '% of the error ≤ w'], brow) + ['']
    out += [f'Distance: exact Euclidean distance from a pixel to the nearest boundary pixel (a labelled pixel with a '
            f'4-neighbour of another label or ignored); the boundary band is distance ≤ {w:g} px.', '']
    out += ['## Per image', '', f'![per-image ECE]({figures["image_ece.png"]})', '']
    if gallery:
        out += ['## Worst-calibrated images', '', f'![worst images]({figures["worst_images.png"]})', '',
                ', '.join(f'`{osp.basename(g.img_path)}` ({g.ece:.1f} %)' for g in gallery), '']
    shift = results.get('shift') or {}
    if shift:
        out += _shift_markdown(results, figures)
    out += ['## Definitions', '',
            '- ECE_15: top-label expected calibration error, 15 equal-width confidence bins, over all labelled '
            'pixels (percent); OE/UE: its over-/under-confident parts; cwCE_15: class-wise ECE averaged over classes.',
            '- FPR95: share of misclassified pixels whose confidence is at least the threshold that keeps 95 % of '
            'the correct pixels; AUPR_err: area under the precision-recall curve of detecting errors by low '
            'confidence.', '- Every number of this report is in `results.json`.', '']
    return '\n'.join(out)


def _shift_markdown(results: Mapping[str, Any], figures: Mapping[str, str]) -> List[str]:
    from ..datasets.transforms.corruptions import SEVERITY_TABLE

    shift = results['shift']
    methods = list(results['methods'])
    out = ['## Under corruption', '', f'![ECE under shift]({figures["shift_ece.png"]}) '
           f'![mIoU under shift]({figures["shift_miou.png"]})', '',
           'Calibrators are fitted on clean data only. Mean over corruptions per severity (severity 0: clean):', '']
    severities = sorted({int(s) for per in shift.values() for s in per})
    for key in ('ECE_15', 'mIoU'):
        means = shift_means(shift, key)
        rows = [[m, _fmt(results['methods'][m]['headline'].get(key))] + [_fmt(means.get(m, {}).get(s))
                                                                         for s in severities] for m in methods]
        out += [f'**{key}**', ''] + _table(['method', 'clean'] + [f's{s}' for s in severities], rows) + ['']
    families: Dict[str, List[str]] = {}
    for corruption in shift:
        families.setdefault(SEVERITY_TABLE[corruption][0], []).append(corruption)
    for family, corruptions in families.items():
        out += [f'### {family}', '']
        header = ['corruption', 'severity'] + [f'{m} ECE_15' for m in methods] + ['mIoU (raw)', 'OE_15 (raw)']
        rows = []
        for corruption in corruptions:
            for s in severities:
                cell = shift[corruption].get(str(s))
                if not cell:
                    continue
                rows.append([corruption, str(s)] + [_fmt(cell[m]['headline'].get('ECE_15')) for m in methods]
                            + [_fmt(cell['uncalibrated']['headline'].get('mIoU')),
                               _fmt(cell['uncalibrated']['headline'].get('OE_15'))])
        out += _table(header, rows) + ['']
    return out
