"""Class-wise temperature scaling: one temperature per class, ``z_k -> z_k / T_k``.

Named "class-based temperature scaling" by Frenkel & Goldberger (Interspeech 2021) and a diagonal special case of
vector scaling without bias (Guo et al., ICML 2017). Unlike global temperature scaling it can change the prediction
``argmax_k z_k / T_k``. The temperatures ``T_k = exp(log_temperature_k) > 0`` minimise the mean NLL

    (1/N) sum_i [logsumexp_k(z_{i,k} / T_k) - z_{i,y_i} / T_{y_i}],

which is convex in the inverse temperatures ``1 / T_k``; it is minimised with L-BFGS over ``log T_k`` starting at
``T_k = 1``, every closure evaluation being one streaming pass (see :func:`~calibseg.calibrators.optim.lbfgs_fit`).
A class without labelled pixels has no data pulling its temperature back: its logit is pushed down without bound,
so ``T_k`` drifts towards ``t_min`` or ``t_max``; ``fit_info['absent_classes']`` lists such classes and a warning
is issued.

Memory: one chunk's autograd graph (``2**16`` pixels x K in float64) plus one source batch per pass; with
``cache=True`` the kept pixels, ``M * (4 K + 8)`` bytes (``M <= images * max_pixels_per_image``).
"""
import math
import warnings
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.validation import check_positive_float, check_positive_int
from .base import BaseCalibrator, LogTemperature
from .data import DataSource
from .optim import lbfgs_fit

__all__ = ['ClasswiseTemperatureScaling']


class ClasswiseTemperatureScaling(LogTemperature, BaseCalibrator):
    """Per-class temperatures ``z_k / T_k`` fitted by NLL.

    Args:
        num_classes: K, the number of temperatures.
        t_min: smallest temperature kept after fitting (the fitted values are clamped to ``[t_min, t_max]``).
        t_max: largest temperature kept after fitting.
        max_iter: L-BFGS iterations.
        tolerance_grad: L-BFGS stops when every gradient entry of the mean NLL is below this.
    """

    method = 'ClasswiseTemperatureScaling'

    def __init__(self, *, num_classes: int, t_min: float = 0.01, t_max: float = 100.0, max_iter: int = 100,
                 tolerance_grad: float = 1e-9) -> None:
        super().__init__(num_classes=num_classes)
        self._init_temperature(t_min, t_max, (num_classes,))
        self.max_iter = check_positive_int('max_iter', max_iter)
        self.tolerance_grad = check_positive_float('tolerance_grad', tolerance_grad)

    def get_config(self) -> Dict[str, Any]:
        return {'num_classes': self.num_classes, 't_min': self.t_min, 't_max': self.t_max,
                'max_iter': self.max_iter, 'tolerance_grad': self.tolerance_grad}

    def describe(self) -> str:
        head = f'num_classes={self.num_classes}'
        if not self.fitted:
            return head + ', unfitted'
        values = ', '.join(f'{t:.4g}' for t in self.temperature.tolist())
        return head + f', T=[{values}]'

    def _calibrate(self, logits: Tensor) -> Tensor:
        shape = (1, self.num_classes) + (1,) * (logits.dim() - 2)
        return logits / self.temperature.to(logits.dtype).view(shape)

    def fit(self, data: DataSource, labels: Optional[Tensor] = None, *, ignore_index: Optional[int] = 255,
            max_pixels_per_image: Optional[int] = None, generator: Optional[torch.Generator] = None,
            cache: bool = False) -> 'ClasswiseTemperatureScaling':
        """Fit the K temperatures (arguments as :meth:`TemperatureScaling.fit
        <calibseg.calibrators.temperature_scaling.TemperatureScaling.fit>`).

        Returns:
            ``self``; ``fit_info`` holds ``num_pixels``, ``num_images``, ``passes``, ``nll_at_t1``, ``nll`` and
            ``absent_classes``.
        """
        passes = self._passes(data, labels, ignore_index=ignore_index, max_pixels_per_image=max_pixels_per_image,
                              generator=generator, cache=cache)
        log_t = torch.zeros(self.num_classes, dtype=torch.float64, device=self._device, requires_grad=True)

        def chunk_loss(z: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(z * torch.exp(-log_t), y, reduction='sum')

        info = lbfgs_fit([log_t], chunk_loss, passes, max_iter=self.max_iter, tolerance_grad=self.tolerance_grad)
        absent = [k for k, c in enumerate(passes.class_counts.tolist()) if c == 0]
        if absent:
            warnings.warn(f'ClasswiseTemperatureScaling: classes {absent} have no labelled pixels; their '
                          'temperatures are not identifiable and drift to the bounds', stacklevel=2)
        with torch.no_grad():
            bounded = log_t.detach().clamp(math.log(self.t_min), math.log(self.t_max))
            self.log_temperature.copy_(bounded.to(self.log_temperature))
        self.fit_info = {'num_pixels': passes.num_pixels, 'num_images': passes.num_images,
                         'passes': info['passes'], 'nll_at_t1': info['objective_at_start'],
                         'nll': info['objective'], 'absent_classes': absent}
        self._mark_fitted()
        return self
