"""Temperature-and-bias scaling of a one-channel head: ``z -> z / T + b`` fitted by binary cross-entropy.

Platt scaling (Platt, 1999) restricted to a positive slope, ``T = exp(log_temperature) > 0``, so the ranking of the
pixels is kept (the threshold moves with ``b``). The mean BCE
``(1/N) sum_i [softplus(z_i / T + b) - y_i (z_i / T + b)]`` is convex in ``(1/T, b)``; it is minimised with L-BFGS
over ``(log T, b)`` from ``(0, 0)``, one streaming pass per closure evaluation.

Inputs are **logits**: mmseg stores sigmoid probabilities in ``seg_logits`` of one-channel heads; see
:class:`~calibseg.calibrators.base.BinaryCalibrator`. Memory: O(one batch), or the explicit cache.
"""
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.validation import check_positive_float, check_positive_int
from .base import BinaryCalibrator
from .data import DataSource
from .optim import lbfgs_fit

__all__ = ['BinaryTemperatureBiasScaling']


class BinaryTemperatureBiasScaling(BinaryCalibrator):
    """``z / T + b`` for a one-channel head.

    Args:
        max_iter: L-BFGS iterations.
        tolerance_grad: L-BFGS stops when both gradient entries of the mean BCE are below this.
    """

    method = 'BinaryTemperatureBiasScaling'

    def __init__(self, *, max_iter: int = 100, tolerance_grad: float = 1e-9) -> None:
        super().__init__()
        self.max_iter = check_positive_int('max_iter', max_iter)
        self.tolerance_grad = check_positive_float('tolerance_grad', tolerance_grad)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def temperature(self) -> Tensor:
        """The fitted temperature (0-d tensor)."""
        return self.log_temperature.exp()

    def get_config(self) -> Dict[str, Any]:
        return {'max_iter': self.max_iter, 'tolerance_grad': self.tolerance_grad}

    def describe(self) -> str:
        if not self.fitted:
            return 'unfitted'
        return f'T={self.temperature.item():.4f}, b={self.bias.item():.4f}'

    def _calibrate(self, logits: Tensor) -> Tensor:
        return logits / self.temperature.to(logits.dtype) + self.bias.to(logits.dtype)

    def fit(self, data: DataSource, labels: Optional[Tensor] = None, *, ignore_index: Optional[int] = 255,
            max_pixels_per_image: Optional[int] = None, generator: Optional[torch.Generator] = None,
            cache: bool = False) -> 'BinaryTemperatureBiasScaling':
        """Fit ``T`` and ``b`` on one-channel logits and ``{0, 1}`` labels (arguments as
        :meth:`TemperatureScaling.fit <calibseg.calibrators.temperature_scaling.TemperatureScaling.fit>`).

        Returns:
            ``self``; ``fit_info`` holds ``num_pixels``, ``num_images``, ``passes``, ``bce_at_identity``, ``bce``.
        """
        passes = self._binary_passes(data, labels, ignore_index=ignore_index,
                                     max_pixels_per_image=max_pixels_per_image, generator=generator, cache=cache)
        log_t = torch.zeros((), dtype=torch.float64, device=self._device, requires_grad=True)
        b = torch.zeros((), dtype=torch.float64, device=self._device, requires_grad=True)

        def chunk_loss(z: Tensor, y: Tensor) -> Tensor:
            return F.binary_cross_entropy_with_logits(z.squeeze(1) * torch.exp(-log_t) + b, y.to(z.dtype),
                                                      reduction='sum')

        info = lbfgs_fit([log_t, b], chunk_loss, passes, max_iter=self.max_iter,
                         tolerance_grad=self.tolerance_grad)
        with torch.no_grad():
            self.log_temperature.copy_(log_t.detach().to(self.log_temperature))
            self.bias.copy_(b.detach().to(self.bias))
        self.fit_info = {'num_pixels': passes.num_pixels, 'num_images': passes.num_images,
                         'passes': info['passes'], 'bce_at_identity': info['objective_at_start'],
                         'bce': info['objective']}
        self._mark_fitted()
        return self
