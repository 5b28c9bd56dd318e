"""Temperature scaling of a one-channel (sigmoid) head: ``z -> z / T`` fitted by binary cross-entropy.

With ``beta = 1 / T`` the mean BCE ``(1/N) sum_i [softplus(beta z_i) - y_i beta z_i]`` is convex in ``beta``; it is
minimised by the same safeguarded Newton iteration as :class:`~calibseg.calibrators.TemperatureScaling`, one
streaming pass per iteration, with ``f' = sum_i (sigmoid(beta z_i) - y_i) z_i`` and
``f'' = sum_i sigmoid(beta z_i)(1 - sigmoid(beta z_i)) z_i^2``. The decision ``z >= 0`` is unchanged.

Inputs are **logits**: mmseg stores sigmoid probabilities in ``seg_logits`` of one-channel heads; see
:class:`~calibseg.calibrators.base.BinaryCalibrator`. Memory: O(one batch), or the explicit cache
(``M * 12`` bytes for ``M`` kept pixels).
"""
import math
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.validation import check_positive_float, check_positive_int
from .base import BinaryCalibrator, LogTemperature
from .data import DataSource, PixelPasses
from .optim import newton_inverse_temperature

__all__ = ['BinaryTemperatureScaling']


class BinaryTemperatureScaling(LogTemperature, BinaryCalibrator):
    """One temperature for a one-channel head, ``T = exp(log_temperature) > 0``.

    Args:
        t_min: smallest temperature of the search.
        t_max: largest temperature of the search.
        tol: relative step size of ``1/T`` at which the Newton iteration stops.
        max_iter: most passes.
    """

    method = 'BinaryTemperatureScaling'

    def __init__(self, *, t_min: float = 0.01, t_max: float = 100.0, tol: float = 1e-8,
                 max_iter: int = 100) -> None:
        super().__init__()
        self._init_temperature(t_min, t_max)
        self.tol = check_positive_float('tol', tol)
        self.max_iter = check_positive_int('max_iter', max_iter)

    def get_config(self) -> Dict[str, Any]:
        return {'t_min': self.t_min, 't_max': self.t_max, 'tol': self.tol, 'max_iter': self.max_iter}

    def describe(self) -> str:
        return 'unfitted' if not self.fitted else f'T={self.temperature.item():.4f}'

    def _calibrate(self, logits: Tensor) -> Tensor:
        return logits / self.temperature.to(logits.dtype)

    def fit(self, data: DataSource, labels: Optional[Tensor] = None, *, ignore_index: Optional[int] = 255,
            max_pixels_per_image: Optional[int] = None, generator: Optional[torch.Generator] = None,
            cache: bool = False) -> 'BinaryTemperatureScaling':
        """Fit ``T`` on one-channel logits and ``{0, 1}`` labels (arguments as :meth:`TemperatureScaling.fit
        <calibseg.calibrators.temperature_scaling.TemperatureScaling.fit>`).

        Returns:
            ``self``; ``fit_info`` holds ``temperature`` (float64), ``num_pixels``, ``num_images``, ``passes``,
            ``bce_at_t1``, ``bce``, ``converged`` and ``at_bound`` (a fit that does not converge warns).
        """
        passes = self._binary_passes(data, labels, ignore_index=ignore_index,
                                     max_pixels_per_image=max_pixels_per_image, generator=generator, cache=cache)
        beta, info = newton_inverse_temperature(lambda b: _bce_stats(passes, b), t_min=self.t_min,
                                                t_max=self.t_max, tol=self.tol, max_iter=self.max_iter,
                                                name='BinaryTemperatureScaling.fit')
        with torch.no_grad():
            self.log_temperature.fill_(-math.log(beta))
        n = passes.num_pixels
        self.fit_info = {'temperature': 1.0 / beta, 'num_pixels': n, 'num_images': passes.num_images,
                         'passes': info['passes'],
                         'converged': info['converged'], 'at_bound': info['at_bound'],
                         'bce': info['objective'] / n}
        if self.t_min <= 1.0 <= self.t_max:
            self.fit_info['bce_at_t1'] = info['objective_at_start'] / n
        self._mark_fitted()
        return self


def _bce_stats(passes: PixelPasses, beta: float) -> Tuple[float, float, float]:
    """``(sum BCE, d/dbeta, d2/dbeta2)`` of ``sigmoid(beta z)`` over one pass."""
    f = g = h = 0.0
    for z, y in passes:
        z = z.squeeze(1)
        t = y.to(z.dtype)
        s = z * beta
        p = torch.sigmoid(s)
        f += float((F.softplus(s) - t * s).sum())
        g += float(((p - t) * z).sum())
        h += float((p * (1 - p) * z.square()).sum())
    return f, g, h
