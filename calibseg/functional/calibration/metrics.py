r"""The calibration metric dictionary computed from :class:`CalibrationStatistics` (the key contract).

Keys (``B`` over ``bins``, default ``(5, 10, 15, 20, 25, 50, 100, 200, 500)``):

=================  ==========================================================================================
family             keys
=================  ==========================================================================================
``'ECE'``          ``ECE_{B}`` (top-label, equal-width, exact) and ``ECE`` (= ``ECE_15``; ``ECE_10`` for binary)
``'ECE_em'``       ``ECE_em_{B}`` (equal-mass, within :func:`approximation_bounds` of the per-pixel value)
``'cwCE'``         ``cwCE_{B}`` (class-wise, equal-width, each class normalised by ``N``, mean over classes)
``'cwCE_em'``      ``cwCE_em_{B}``
``'MCE'``          ``MCE_{B}``
``'RMSCE'``        ``RMSCE_15``
``'dECE'``         ``dECE_15`` (debiased L2 ECE)
``'OE'``, ``'UE'`` ``OE_15``, ``UE_15`` (``OE_10``, ``UE_10`` for binary maps)
``'KSCE'``         ``KSCE``
``'KDECE'``        ``KDECE`` (Zhang et al.'s estimator as the benchmark computes it, see :func:`.kernel.kdece`;
                   NaN without correct pixels or when they all share one confidence)
``'MMCE'``         ``MMCE``
``'smECE'``        ``smECE``
``'SECE'``         ``SECE``
``'AUROC'``        ``AUROC`` (NaN when all pixels are correct or all wrong)
``'AURC'``         ``AURC``
``'FPR95'``        ``FPR95`` (failure detection: wrong pixels above the 95 %-TPR threshold; NaN like AUROC)
``'AUPR_err'``     ``AUPR_err`` (average precision of finding wrong pixels by low confidence; NaN like AUROC)
``'NLL'``          ``NLL`` (mean, nats)
``'Brier'``        ``Brier``: ``(1/N) Σ_i Σ_k (p_{i,k} - 1[y_i = k])^2``, summed over the classes per pixel
                   (``K`` times the ``N·K`` average of the benchmark's library; binary maps: ``(p_i - y_i)^2``)
``'Acc'``          ``Acc`` (pixel accuracy)
=================  ==========================================================================================

Every calibration error, ``AUROC``, ``AURC`` and ``Acc`` is in **percent** (×100, like mmseg's mIoU);
``NLL`` and ``Brier`` are raw; nothing is rounded. Definitions: :mod:`.binned`, :mod:`.ranking`, :mod:`.kernel`.
"""
from typing import Dict, Iterable, Optional, Sequence

from .binned import bin_sums, binned_errors, classwise_ece
from .bounds import equal_mass_error_bound
from .kernel import cell_points, kdece, kdece_bound, mmce, sece_from_cells, smece
from .parallel import one_thread
from .ranking import aupr_error, aurc, auroc, fpr_at_95, ks_error, ranking_bounds
from .statistics import CalibrationStatistics

__all__ = ['DEFAULT_BINS', 'METRIC_FAMILIES', 'calibration_metrics', 'approximation_bounds', 'classwise_table',
           'check_nonempty']

DEFAULT_BINS = (5, 10, 15, 20, 25, 50, 100, 200, 500)
METRIC_FAMILIES = ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE', 'RMSCE', 'dECE', 'OE', 'UE', 'KSCE', 'KDECE',
                   'MMCE', 'smECE', 'SECE', 'AUROC', 'AURC', 'FPR95', 'AUPR_err', 'NLL', 'Brier', 'Acc')
_CLASSWISE = ('cwCE', 'cwCE_em')
_PCT = 100.0


def check_nonempty(stats: CalibrationStatistics) -> int:
    """``N`` of the statistics; a ``ValueError`` when no pixel was accumulated (metrics undefined) or when deferred
    updates kept value problems (:meth:`CalibrationStatistics.check_problems`)."""
    if not isinstance(stats, CalibrationStatistics):
        raise ValueError(f'expected CalibrationStatistics, got {type(stats).__name__}')
    stats.check_problems()
    n = stats.num_pixels
    if n <= 0:
        raise ValueError('no valid pixel was accumulated (every pixel ignored, or no update): calibration '
                         'metrics are undefined')
    return n


def _families(stats: CalibrationStatistics, metrics: Optional[Iterable[str]]) -> Sequence[str]:
    if metrics is None:
        return [f for f in METRIC_FAMILIES if stats.classwise or f not in _CLASSWISE]
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    unknown = [m for m in metrics if m not in METRIC_FAMILIES]
    if unknown:
        raise ValueError(f'unknown metric families {unknown}; choose from {list(METRIC_FAMILIES)}')
    if not stats.classwise and any(m in _CLASSWISE for m in metrics):
        raise ValueError('cwCE/cwCE_em need class-wise statistics: build them with classwise=True')
    return metrics


def _check_bin_list(bins: Sequence[int], base: int) -> Sequence[int]:
    bins = list(bins)
    for b in bins:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1 or base % b:
            raise ValueError(f'every bin count must be a positive divisor of {base} (exact equal-width bins), '
                             f'got {b!r} in {bins}')
    return bins


def _class_mean(stats: CalibrationStatistics, per_class):
    first = 1 if stats.exclude_background else 0
    return float(per_class[first:].mean())


def calibration_metrics(stats: CalibrationStatistics, *, metrics: Optional[Iterable[str]] = None,
                        bins: Sequence[int] = DEFAULT_BINS, sece_bandwidth: float = 0.05,
                        mmce_width: float = 0.4) -> Dict[str, float]:
    """Compute the calibration metric dictionary (see the module docstring for keys and units).

    Args:
        stats: accumulated :class:`CalibrationStatistics` (or ``BinaryCalibrationStatistics``).
        metrics: key families to compute (default: all; the class-wise ones only if ``stats.classwise``).
        bins: bin counts ``B`` for the per-``B`` families; each must divide the grid's 3000 base cells.
        sece_bandwidth: ``h`` of SECE's Gaussian kernel.
        mmce_width: width of MMCE's Laplacian kernel.

    Returns:
        ``{key: float}``.

    Raises:
        ValueError: no pixel accumulated, an unknown family, class-wise families without class-wise
            statistics, or a bin count that does not divide 3000.
    """
    with one_thread():  # thousands of small operations on the cells: a second thread only adds wake-ups
        return _calibration_metrics(stats, metrics, bins, sece_bandwidth, mmce_width)


def _calibration_metrics(stats: CalibrationStatistics, metrics: Optional[Iterable[str]], bins: Sequence[int],
                         sece_bandwidth: float, mmce_width: float) -> Dict[str, float]:
    n_total = check_nonempty(stats)
    fams = _families(stats, metrics)
    grid = stats.grid
    bins = _check_bin_list(bins, grid.base_cells)
    head = 10 if stats.binary else 15
    out: Dict[str, float] = {}
    count, s_conf, s_acc = (t.detach().cpu() for t in (stats.count, stats.sum_conf, stats.sum_correct))

    width_cache: Dict[int, Dict[str, float]] = {}

    def width_errors(b: int) -> Dict[str, float]:
        if b not in width_cache:
            width_cache[b] = binned_errors(*bin_sums(grid, count, s_conf, s_acc, n_bins=b), total=n_total)
        return width_cache[b]

    if 'ECE' in fams:
        for b in bins:
            out[f'ECE_{b}'] = _PCT * width_errors(b)['ECE']
        out['ECE'] = _PCT * width_errors(head)['ECE']
    if 'ECE_em' in fams:
        for b in bins:
            n, c, a = bin_sums(grid, count, s_conf, s_acc, n_bins=b, scheme='mass')
            out[f'ECE_em_{b}'] = _PCT * float((a - c).abs().sum()) / n_total
    for fam, scheme in (('cwCE', 'width'), ('cwCE_em', 'mass')):
        if fam in fams:
            for b in bins:
                out[f'{fam}_{b}'] = _PCT * _class_mean(stats, classwise_ece(stats, b, scheme=scheme))
    if 'MCE' in fams:
        for b in bins:
            out[f'MCE_{b}'] = _PCT * width_errors(b)['MCE']
    if 'RMSCE' in fams:
        out['RMSCE_15'] = _PCT * width_errors(15)['RMSCE']
    if 'dECE' in fams:
        out['dECE_15'] = _PCT * width_errors(15)['dECE']
    for fam in ('OE', 'UE'):
        if fam in fams:
            out[f'{fam}_{head}'] = _PCT * width_errors(head)[fam]
    if 'KSCE' in fams:
        out['KSCE'] = _PCT * ks_error(stats)
    if 'KDECE' in fams:
        out['KDECE'] = _PCT * kdece(stats)
    if 'MMCE' in fams:
        out['MMCE'] = _PCT * mmce(stats, width=mmce_width)
    if 'smECE' in fams:
        out['smECE'] = _PCT * smece(stats)
    if 'SECE' in fams:
        x, n, a, _ = cell_points(stats)
        out['SECE'] = _PCT * float(sece_from_cells(x, n, a, bandwidth=sece_bandwidth))
    if 'AUROC' in fams:
        out['AUROC'] = _PCT * auroc(stats)
    if 'AURC' in fams:
        out['AURC'] = _PCT * aurc(stats)
    if 'FPR95' in fams:
        out['FPR95'] = _PCT * fpr_at_95(stats)
    if 'AUPR_err' in fams:
        out['AUPR_err'] = _PCT * aupr_error(stats)
    sc = stats.scalars
    if 'NLL' in fams:
        out['NLL'] = sc['sum_nll'] / n_total
    if 'Brier' in fams:
        out['Brier'] = sc['sum_brier'] / n_total
    if 'Acc' in fams:
        out['Acc'] = _PCT * sc['sum_correct'] / n_total
    return out


def approximation_bounds(stats: CalibrationStatistics, *, bins: Sequence[int] = DEFAULT_BINS
                         ) -> Dict[str, float]:
    """Bounds (percent) on ``|grid value - exact per-pixel value|`` of the grid-dependent keys.

    ``ECE_em_{B}`` and ``cwCE_em_{B}`` (tie-aware, see :mod:`.bounds`; for ``cwCE_em`` the mean of the per-class
    bounds), ``KSCE``, ``AUROC`` and ``AURC`` (see :mod:`.ranking`) and ``KDECE`` (:func:`.kernel.kdece_bound`,
    a worst case; NaN when KDECE is). Equal-width keys, ``NLL``, ``Brier`` and ``Acc`` are exact (bound 0, not
    listed); the other kernel estimators carry the ``O(w/h)`` grid error of :mod:`.kernel`.
    """
    check_nonempty(stats)
    bins = _check_bin_list(bins, stats.grid.base_cells)
    out: Dict[str, float] = {}
    grid = stats.grid
    edges = (grid.lower, grid.upper, grid.single_valued)
    count, correct = stats.count.detach().cpu(), stats.sum_correct.detach().cpu()
    for b in bins:
        out[f'ECE_em_{b}'] = _PCT * float(equal_mass_error_bound(count, correct, *edges, b))
    if stats.classwise:
        cw, cw_label = stats.cw_count.detach().cpu(), stats.cw_sum_label.detach().cpu()
        for b in bins:
            out[f'cwCE_em_{b}'] = _PCT * _class_mean(stats, equal_mass_error_bound(cw, cw_label, *edges, b))
    out.update({k: _PCT * v for k, v in ranking_bounds(stats).items()})
    out['KDECE'] = _PCT * kdece_bound(stats)
    return out


def classwise_table(stats: CalibrationStatistics, *, n_bins: int = 15) -> Dict[str, list]:
    """Per-class table: class index, class-wise equal-width ECE (percent, normalised by ``N``), pixel count.

    Returns:
        ``{'class': [...], f'ECE_{n_bins}': [...], 'pixels': [...], 'in_average': [...]}``, one entry per class
        (``in_average`` is False for class 0 with ``exclude_background``).
    """
    check_nonempty(stats)
    per = classwise_ece(stats, n_bins)
    pixels = stats.cw_sum_label.detach().cpu().sum(-1)
    k = stats.num_classes
    return {'class': list(range(k)), f'ECE_{n_bins}': [_PCT * float(v) for v in per],
            'pixels': [int(v) for v in pixels],
            'in_average': [not (stats.exclude_background and i == 0) for i in range(k)]}
