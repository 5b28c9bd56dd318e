"""The benchmark's seven questions (Tao et al., ICLR 2024, "A Benchmark Study on Calibration"), answered from a
study's computed statistics, each with how sure the answer is.

How sure: with ``n`` models, Kendall's tau between two independent rankings has a standard deviation
``sigma = tau_noise(n)`` (:func:`~calibseg.study.kendall.tau_noise`); a tau is called *beyond noise* at
``|tau| >= 2 sigma``, *weak* at ``sigma <= |tau| < 2 sigma`` and *within noise* below ``sigma``. These levels assume
independent models; the half-way and final checkpoints of one run are not independent, so the effective number of
models is smaller and the levels are optimistic. The text is generated from the numbers only.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .kendall import tau_noise

__all__ = ['QUESTIONS', 'sureness', 'seven_questions']

#: the benchmark's questions, in the order of :func:`seven_questions`
QUESTIONS = (
    ('metric reliability', 'Do the calibration metrics rank the models alike?'),
    ('post-hoc consistency', 'Does temperature scaling affect all models uniformly?'),
    ('accuracy vs calibration', 'Are the more accurate models the better calibrated ones?'),
    ('bin count', 'Does the number of bins change how binned metrics rank the models?'),
    ('architecture', 'Which architectural choices give better calibration?'),
    ('(i) cross-dataset', "Does a recipe's calibration on one dataset predict it on another?"),
    ('(ii) robustness', 'Can robustness to corruption serve as a calibration measure?'),
)


def sureness(tau: float, n: int, label: str = 'tau') -> str:
    """``'<label> +0.45 (n 30, noise +-0.13: beyond noise)'``: a tau with its noise level (module docstring).

    Example:
        >>> sureness(0.5, 30)
        'tau +0.50 (n 30, noise +-0.13: beyond noise)'
    """
    sigma = tau_noise(n)
    if not (np.isfinite(tau) and np.isfinite(sigma)):
        return f'{label} undefined (n {n})'
    ratio = abs(tau) / sigma
    verdict = 'beyond noise' if ratio >= 2 else 'weak' if ratio >= 1 else 'within noise'
    return f'{label} {tau:+.2f} (n {n}, noise +-{sigma:.2f}: {verdict})'


def _fmt(v: float, digits: int = 2) -> str:
    return '-' if v is None or not np.isfinite(v) else f'{v:.{digits}f}'


def _metric_reliability(labels: Sequence[str], tau_pre: np.ndarray, tau_post: np.ndarray, n: int) -> str:
    errors = [i for i, k in enumerate(labels) if k not in ('AUROC', 'HCS', 'mIoU', 'aAcc')]
    if len(errors) < 2:
        return 'not answerable: fewer than two error metrics in the table.'
    parts = []
    for stage, m in (('before TS', tau_pre), ('after TS', tau_post)):
        pairs = [(m[i, j], labels[i], labels[j]) for a, i in enumerate(errors) for j in errors[a + 1:]
                 if np.isfinite(m[i, j])]
        if not pairs:
            continue
        taus = np.array([p[0] for p in pairs])
        low = min(pairs)
        below = int(np.sum(np.abs(taus) < 2 * tau_noise(n)))
        parts.append(f'{stage}, the {len(pairs)} pairs of error metrics have median tau {np.median(taus):.2f} '
                     f'(range {taus.min():.2f} to {taus.max():.2f}); {below} pairs are not beyond noise; the most '
                     f'discordant pair is {low[1]} / {low[2]}, {sureness(low[0], n)}')
    return '; '.join(parts) + '.'


def _post_hoc(rank_taus: Mapping[str, float], gain_taus: Mapping[str, float], improved: Tuple[int, int],
              n: int) -> str:
    parts = [sureness(rank_taus[k], n, f'tau(pre-TS {k}, post-TS {k})') for k in ('ECE_15', 'NLL') if k in rank_taus]
    parts += [sureness(tau, n, f'tau(pre-TS {k}, gain in {k})') for k, tau in gain_taus.items()]
    mean = np.nanmean(list(rank_taus.values())) if rank_taus else math.nan
    parts.append(f'mean tau(pre, post) over {len(rank_taus)} calibration keys {_fmt(mean)}; TS lowers ECE_15 for '
                 f'{improved[0]}/{improved[1]} models')
    ece = rank_taus.get('ECE_15', math.nan)
    if not np.isfinite(ece):
        verdict = ''
    elif abs(ece) < 2 * tau_noise(n):
        verdict = 'no: the ECE_15 ranking before TS does not predict the one after; '
    elif ece < 0.8:
        verdict = 'not uniformly: the ECE_15 ranking partly survives TS; '
    else:
        verdict = 'nearly: TS keeps the ECE_15 ranking; '
    return verdict + '; '.join(parts) + '.'


def _relation(tau: float, n: int, agree: str, disagree: str) -> str:
    """``agree`` / ``disagree`` when tau is beyond noise and positive / negative, else that no relation shows."""
    if not (np.isfinite(tau) and np.isfinite(tau_noise(n))) or abs(tau) < 2 * tau_noise(n):
        return 'no relation beyond noise'
    return agree if tau > 0 else disagree


def _accuracy(acc_taus: Mapping[str, float], n: int) -> str:
    if not acc_taus:
        return 'not answerable: no mIoU column.'
    verdicts = [f'{k.split("~", 1)[1]}: ' + _relation(-v, n, 'yes', 'the opposite') for k, v in acc_taus.items()]
    parts = [sureness(v, n, f'tau(mIoU, {k.split("~", 1)[1]})') for k, v in acc_taus.items()]
    return ('; '.join(verdicts) + ' (errors point the other way from mIoU: tau < 0 means the more accurate models '
            'are the better calibrated); ' + '; '.join(parts) + '.')


def _bins(sensitivity: Mapping[str, Mapping[str, List[Tuple[int, float, float]]]], reference: int, n: int) -> str:
    ece = sensitivity.get('ECE')
    if not ece:
        return 'not answerable: no binned ECE columns.'
    parts = []
    for stage in ('pre', 'post'):
        points = {b: (t, r) for b, t, r in ece.get(stage, [])}
        for b in (min(points, default=None), max(points, default=None)):
            if b is not None and b != reference:
                t, r = points[b]
                parts.append(f'{sureness(t, n, f"tau(ECE_{b}, ECE_{reference}) {stage} TS")}, median ratio '
                             f'{_fmt(r)}')
    return ('the ranking barely moves if tau stays near 1; the values do move (the ratio): '
            + '; '.join(parts) + '.')


def _architecture(text: Mapping[str, List[str]], numeric: Mapping[str, np.ndarray], n: int) -> str:
    backbones = sorted({b for b in text.get('backbone', []) if b})
    widths = numeric.get('decode_channels')
    width_values = sorted({int(w) for w in widths if np.isfinite(w)}) if widths is not None else []
    if len(backbones) <= 1:
        name = backbones[0] if backbones else 'one backbone'
        return (f'**cannot be answered by this data**: all {n} models are FCN heads on {name}; only the decode-head '
                f'width varies ({", ".join(map(str, width_values)) or "-"} channels), and only together with the loss '
                'and the training length (the extra runs), so its effect is confounded. Answering it needs the same '
                'recipes on several backbones or heads (e.g. the DeepLabV3+ R-50/R-101 configs on real data).')
    counts = {b: text['backbone'].count(b) for b in backbones}
    return ('backbones ' + ', '.join(f'{b} ({c} models)' for b, c in counts.items()) +
            ': compare their rows in the model table; no test of the difference is made here.')


def _cross(cross: Optional[Mapping[str, object]], name: str) -> str:
    if not cross:
        return ('**not measured here**: no second-dataset table was given (`tools/run_demo_study.py --dataset '
                'cityscapes`, then `--cross-table` of the analysis).')
    n = int(cross['n'])
    if n < 3:
        return f'not answerable: only {n} recipes are in both tables.'
    taus = cross['taus']
    verdict = ''
    if 'ECE_15' in taus:
        verdict = '; '.join(f'{stage} TS, ' + _relation(taus['ECE_15'][i], n, 'ECE_15 ranks the recipes alike',
                                                          'ECE_15 ranks the recipes in reverse')
                            for i, stage in enumerate(('before', 'after'))) + '. '
    parts = [f'{sureness(taus[k][0], n, f"tau({k}, pre TS)")}, {sureness(taus[k][1], n, f"tau({k}, post TS)")}'
             for k in ('ECE_15', 'NLL') if k in taus]
    calibration = [k for k in taus if k not in ('mIoU', 'aAcc')]
    beyond = [k for k in calibration if np.isfinite(taus[k][0]) and abs(taus[k][0]) >= 2 * tau_noise(n)]
    pre = np.nanmean([taus[k][0] for k in calibration]) if calibration else math.nan
    post = np.nanmean([taus[k][1] for k in calibration]) if calibration else math.nan
    acc = f'; for comparison {sureness(taus["mIoU"][0], n, "tau(mIoU)")}' if 'mIoU' in taus else ''
    return (f'{verdict}{n} recipes matched by method at their final checkpoints between this table and the {name} '
            'table; ' + '; '.join(parts) + f'; mean tau over {len(calibration)} calibration keys {_fmt(pre)} pre, '
            f'{_fmt(post)} post TS; beyond noise before TS: {", ".join(beyond) or "none"}{acc}.')


def _robustness(robustness: Optional[Mapping[str, Mapping[str, float]]], corruptions: str) -> str:
    if not robustness:
        return ('**not measured here**: the table has no robustness columns (measure with `--corruptions demo`; '
                'a table holds one protocol, so into a new table).')
    n = int(robustness['_']['n'])
    verdict = ''
    if 'ECE_15' in robustness:
        verdict = '; '.join(
            f'{stage} TS, ' + _relation(robustness['ECE_15'][f'drop~{key}'], n,
                                        'the models that lose less mIoU are the better calibrated (ECE_15)',
                                        'the models that lose less mIoU are the worse calibrated (ECE_15)')
            for stage, key in (('before', 'pre'), ('after', 'post'))) + '. '
    parts = []
    for key in ('ECE_15', 'NLL'):
        if key in robustness:
            r = robustness[key]
            parts.append(f'{sureness(r["drop~pre"], n, f"tau(mIoU drop, {key})")}, '
                         f'{sureness(r["drop~post"], n, f"tau(mIoU drop, post-TS {key})")}; tau(corrupted mIoU, '
                         f'{key}) pre {_fmt(r["shift_mIoU~pre"])}, post {_fmt(r["shift_mIoU~post"])}')
    keys = [k for k in robustness if k != '_' and k not in ('AUROC', 'HCS')]
    mean = np.nanmean([robustness[k]['drop~post'] for k in keys]) if keys else math.nan
    return (f'under {corruptions or "the corruptions"}: {verdict}' + '; '.join(parts) +
            f'; mean tau(drop, error) over {len(keys)} error keys after TS {_fmt(mean)}; the drop is confounded with '
            f'clean accuracy: {sureness(robustness["_"]["mIoU~drop"], n, "tau(mIoU, drop)")}.')


def seven_questions(*, n: int, labels: Sequence[str], tau_pre: np.ndarray, tau_post: np.ndarray,
                    rank_taus: Mapping[str, float], gain_taus: Mapping[str, float], improved: Tuple[int, int],
                    acc_taus: Mapping[str, float], sensitivity, reference_bins: int,
                    numeric: Mapping[str, np.ndarray], text: Mapping[str, List[str]],
                    robustness: Optional[Mapping[str, Mapping[str, float]]] = None, corruptions: str = '',
                    cross: Optional[Mapping[str, object]] = None, cross_name: str = '') -> List[str]:
    """Markdown lines: for each of :data:`QUESTIONS`, what the data answers and how sure (module docstring)."""
    answers: Dict[str, str] = {
        'metric reliability': _metric_reliability(labels, tau_pre, tau_post, n),
        'post-hoc consistency': _post_hoc(rank_taus, gain_taus, improved, n),
        'accuracy vs calibration': _accuracy(acc_taus, n),
        'bin count': _bins(sensitivity, reference_bins, n),
        'architecture': _architecture(text, numeric, n),
        '(i) cross-dataset': _cross(cross, cross_name),
        '(ii) robustness': _robustness(robustness, corruptions),
    }
    lines = ['## The benchmark\'s seven questions', '',
             f'What this table answers ({n} models; one training seed; noise levels as in '
             '`calibseg.study.questions`: beyond noise = |tau| >= 2 sigma of independent rankings, optimistic since '
             'the two checkpoints of a run are not independent).', '']
    for number, (key, question) in enumerate(QUESTIONS, 1):
        lines.append(f'{number}. **{key}** — {question} {answers[key]}')
    return lines + ['']
