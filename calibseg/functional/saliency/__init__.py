"""Pure-PyTorch accuracy measures for dense binary (saliency) maps (no OpenMMLab import).

Per image: :func:`mae`, :func:`fmeasure_curve` (256 thresholds, :math:`\\beta^2 = 0.3`),
:func:`smeasure` (:math:`\\alpha = 0.5`), :func:`emeasure_curve` (256 thresholds), all on raw
foreground probabilities; :func:`saliency_record` bundles them and :func:`summarize_saliency` turns
records into the dataset numbers ``MAE``, ``maxF``, ``meanF``, ``Sm``, ``meanEm``, ``maxEm``.
"""
from .common import NUM_THRESHOLDS, check_saliency_pair, minmax_rescale, threshold_counts
from .emeasure import emeasure_curve, emeasure_from_counts
from .fmeasure import fmeasure_curve, fmeasure_from_counts
from .mae import mae
from .smeasure import smeasure
from .summary import SALIENCY_KEYS, saliency_record, summarize_saliency

__all__ = [
    'NUM_THRESHOLDS', 'SALIENCY_KEYS', 'check_saliency_pair', 'minmax_rescale', 'threshold_counts', 'mae',
    'fmeasure_curve', 'fmeasure_from_counts', 'emeasure_curve', 'emeasure_from_counts', 'smeasure',
    'saliency_record', 'summarize_saliency'
]
