"""Vector scaling (Guo et al., ICML 2017): a diagonal affine map of the logits, ``z_k -> w_k z_k + b_k``.

Fitted by minimising the mean NLL ``(1/N) sum_i [logsumexp_k(w_k z_{i,k} + b_k) - w_{y_i} z_{i,y_i} - b_{y_i}]``,
convex in ``(w, b)`` (the calibrated logits are affine in them), with L-BFGS from ``w = 1, b = 0``; each closure
evaluation is one streaming pass. ``w_k`` is not constrained to be positive (as in Guo et al.). Adding a constant
to every ``b_k`` leaves the softmax unchanged; the gradient of the NLL sums to zero over ``b``, so the mean of ``b``
stays at its initial 0 and the fitted ``b`` is centred (``sum_k b_k = 0``, re-centred after fitting).
A class without labelled pixels is pushed down without bound (``fit_info['absent_classes']``, with a warning).

Memory: as for :mod:`~calibseg.calibrators.classwise_temperature_scaling`.
"""
import warnings
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.validation import check_positive_float, check_positive_int
from .base import BaseCalibrator
from .data import DataSource
from .optim import lbfgs_fit

__all__ = ['VectorScaling']


class VectorScaling(BaseCalibrator):
    """Diagonal affine calibration ``w * z + b`` (per class) fitted by NLL.

    Args:
        num_classes: K.
        max_iter: L-BFGS iterations.
        tolerance_grad: L-BFGS stops when every gradient entry of the mean NLL is below this.
    """

    method = 'VectorScaling'

    def __init__(self, *, num_classes: int, max_iter: int = 100, tolerance_grad: float = 1e-9) -> None:
        super().__init__(num_classes=num_classes)
        self.max_iter = check_positive_int('max_iter', max_iter)
        self.tolerance_grad = check_positive_float('tolerance_grad', tolerance_grad)
        self.weight = nn.Parameter(torch.ones(num_classes))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def get_config(self) -> Dict[str, Any]:
        return {'num_classes': self.num_classes, 'max_iter': self.max_iter, 'tolerance_grad': self.tolerance_grad}

    def describe(self) -> str:
        head = f'num_classes={self.num_classes}'
        if not self.fitted:
            return head + ', unfitted'
        w = ', '.join(f'{v:.4g}' for v in self.weight.tolist())
        b = ', '.join(f'{v:.4g}' for v in self.bias.tolist())
        return head + f', w=[{w}], b=[{b}]'

    def _calibrate(self, logits: Tensor) -> Tensor:
        shape = (1, self.num_classes) + (1,) * (logits.dim() - 2)
        return logits * self.weight.to(logits.dtype).view(shape) + self.bias.to(logits.dtype).view(shape)

    def fit(self, data: DataSource, labels: Optional[Tensor] = None, *, ignore_index: Optional[int] = 255,
            max_pixels_per_image: Optional[int] = None, generator: Optional[torch.Generator] = None,
            cache: bool = False) -> 'VectorScaling':
        """Fit ``w`` and ``b`` (arguments as :meth:`TemperatureScaling.fit
        <calibseg.calibrators.temperature_scaling.TemperatureScaling.fit>`).

        Returns:
            ``self``; ``fit_info`` holds ``num_pixels``, ``num_images``, ``passes``, ``nll_at_identity``, ``nll``
            and ``absent_classes``.
        """
        passes = self._passes(data, labels, ignore_index=ignore_index, max_pixels_per_image=max_pixels_per_image,
                              generator=generator, cache=cache)
        w = torch.ones(self.num_classes, dtype=torch.float64, device=self._device, requires_grad=True)
        b = torch.zeros(self.num_classes, dtype=torch.float64, device=self._device, requires_grad=True)

        def chunk_loss(z: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(z * w + b, y, reduction='sum')

        info = lbfgs_fit([w, b], chunk_loss, passes, max_iter=self.max_iter, tolerance_grad=self.tolerance_grad)
        absent = [k for k, c in enumerate(passes.class_counts.tolist()) if c == 0]
        if absent:
            warnings.warn(f'VectorScaling: classes {absent} have no labelled pixels; their weight and bias are '
                          'not identifiable', stacklevel=2)
        with torch.no_grad():
            self.weight.copy_(w.detach().to(self.weight))
            self.bias.copy_((b.detach() - b.detach().mean()).to(self.bias))
        self.fit_info = {'num_pixels': passes.num_pixels, 'num_images': passes.num_images,
                         'passes': info['passes'], 'nll_at_identity': info['objective_at_start'],
                         'nll': info['objective'], 'absent_classes': absent}
        self._mark_fitted()
        return self
