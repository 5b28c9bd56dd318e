"""Post-hoc calibrators for segmentation logits: pure PyTorch, no OpenMMLab import.

Every calibrator is an ``nn.Module`` with ``fit(...)`` on validation logits (in memory or streamed in minibatches,
optionally pixel-subsampled) and ``forward(logits)`` returning calibrated logits; see
:mod:`calibseg.calibrators.data` for the data conventions and memory bounds, :mod:`calibseg.calibrators.optim`
for the optimisers, :mod:`calibseg.calibrators.io` for the file format and :mod:`calibseg.calibrators.names`
for the short names (``ts``, ``cts``, ``vs``, ``lts``, ``tsb``).

=================================  =============================================  ==============================
calibrator                         map                                            fitted by
=================================  =============================================  ==============================
``TemperatureScaling``             ``z / T``                                      NLL (Newton on 1/T) or grid
``ClasswiseTemperatureScaling``    ``z_k / T_k``                                  NLL (L-BFGS)
``VectorScaling``                  ``w_k z_k + b_k``                              NLL (L-BFGS)
``LocalTemperatureScaling``        ``z(x) / T(x)``, ``T`` from a small CNN        per-pixel NLL (Adam)
``BinaryTemperatureScaling``       ``z / T`` (one channel)                        BCE (Newton on 1/T)
``BinaryTemperatureBiasScaling``   ``z / T + b`` (one channel)                    BCE (L-BFGS)
=================================  =============================================  ==============================
"""
from .base import BaseCalibrator, BinaryCalibrator
from .binary_temperature_bias_scaling import BinaryTemperatureBiasScaling
from .binary_temperature_scaling import BinaryTemperatureScaling
from .classwise_temperature_scaling import ClasswiseTemperatureScaling
from .data import DataSource, PixelPasses, select_pixels
from .io import (
    CALIBRATORS,
    CalibratorFileError,
    build_calibrator,
    fold_temperature_into_conv,
    load_calibrator,
    save_calibrator,
)
from .local_temperature_scaling import LocalTemperatureScaling, image_at_logits_size
from .names import BINARY_CALIBRATOR_ALIASES, CALIBRATOR_ALIASES, resolve_calibrator_method
from .temperature_scaling import DEFAULT_GRID, TemperatureScaling, grid_statistics, nll_statistics
from .vector_scaling import VectorScaling

__all__ = ['BaseCalibrator', 'BinaryCalibrator', 'DataSource', 'PixelPasses', 'select_pixels',
           'TemperatureScaling', 'ClasswiseTemperatureScaling', 'VectorScaling', 'LocalTemperatureScaling',
           'BinaryTemperatureScaling', 'BinaryTemperatureBiasScaling', 'CALIBRATORS', 'CalibratorFileError',
           'build_calibrator', 'save_calibrator', 'load_calibrator', 'fold_temperature_into_conv', 'DEFAULT_GRID',
           'grid_statistics', 'nll_statistics', 'CALIBRATOR_ALIASES', 'BINARY_CALIBRATOR_ALIASES',
           'resolve_calibrator_method', 'image_at_logits_size']
