"""Pure-PyTorch per-pixel calibration metrics (no OpenMMLab import).

Stream pixels into fixed-size float64 statistics on a refined confidence grid, merge them across batches or
processes by addition, and compute every metric from the merged sums::

    stats = CalibrationStatistics(num_classes=21, input_type='logits')
    for logits, labels in loader:             # (N, K, H, W), (N, H, W)
        stats.update(logits, labels)
    metrics = calibration_metrics(stats)      # {'ECE': ..., 'ECE_15': ..., 'cwCE_15': ..., 'NLL': ...}

Keys, units and definitions: :mod:`.metrics` (and :mod:`.binned`, :mod:`.ranking`, :mod:`.kernel`); grid and
its constants: :mod:`.grid`; per-pixel input conventions: :mod:`.statistics`.
"""
from .binned import equal_mass_bins, reliability_bins
from .grid import DEFAULT_GRID, CalibrationGrid
from .kernel import (
    kde_bandwidth,
    kdece,
    kdece_bound,
    kdece_gaussian,
    kdece_points,
    mmce,
    sece_from_cells,
    smece,
    smooth_ece,
)
from .metrics import (
    DEFAULT_BINS,
    METRIC_FAMILIES,
    approximation_bounds,
    calibration_metrics,
    classwise_table,
)
from .ranking import aupr_error, aurc, auroc, fpr_at_95, ks_error
from .sece import sece
from .spatial import SpatialCalibrationStatistics, boundary_distance, boundary_pixels
from .statistics import BinaryCalibrationStatistics, CalibrationStatistics

__all__ = [
    'CalibrationGrid', 'DEFAULT_GRID', 'CalibrationStatistics', 'BinaryCalibrationStatistics',
    'calibration_metrics', 'approximation_bounds', 'classwise_table', 'reliability_bins', 'equal_mass_bins',
    'DEFAULT_BINS', 'METRIC_FAMILIES', 'sece', 'sece_from_cells', 'kdece', 'kdece_points', 'kdece_bound',
    'kdece_gaussian', 'kde_bandwidth', 'mmce', 'smece', 'smooth_ece', 'ks_error', 'auroc', 'aurc', 'fpr_at_95',
    'aupr_error', 'SpatialCalibrationStatistics', 'boundary_distance', 'boundary_pixels'
]
