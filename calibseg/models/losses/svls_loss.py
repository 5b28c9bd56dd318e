"""Registered spatially varying label smoothing (SVLS)."""
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import svls_loss, validate_svls_args

from .base import CalibrationLossBase, ClassWeightConfig


@MODELS.register_module()
class SVLSLoss(CalibrationLossBase):
    r"""Spatially varying label smoothing for mmseg decode heads.

    .. math::
        \mathrm{SVLS} = \frac{1}{P}\sum_n c_{y_n}\Big(-\sum_c \tilde y_{n,c}\log p_{n,c}\Big),
        \qquad \tilde y_{n,c} = \sum_d a_d(n)\,[y_{n+d} = c]

    over the ``P`` non-ignored pixels, ``a`` the ``k x k`` SVLS kernel (a Gaussian whose centre weight
    is the sum of the others) renormalised over valid neighbours: ignored neighbours never enter a
    target, out-of-image ones are excluded (``border='renormalise'``) or replicated
    (``'replicate'``, as the public code pads). Islam & Glocker, "Spatially Varying Label Smoothing:
    Capturing Uncertainty from Expert Annotations", IPMI 2021; ``kernel_size=3``, ``sigma=1``.

    Args:
        kernel_size: odd ``k >= 3``.
        sigma: ``> 0``, width of the Gaussian in pixels.
        border: ``'renormalise'`` or ``'replicate'``.
        class_weight: per-class weights ``c_k`` (list, array or file path) or ``None``; weights the
            whole per-pixel loss by the pixel's label.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> decode_head = dict(loss_decode=dict(type='SVLSLoss', kernel_size=3, sigma=1.0))
    """

    def __init__(self, *, kernel_size: int = 3, sigma: float = 1.0, border: str = 'renormalise',
                 class_weight: ClassWeightConfig = None, reduction: str = 'mean',
                 loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_svls') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._set_options(validate_svls_args(kernel_size=kernel_size, sigma=sigma, border=border))

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        return svls_loss(seg_logits, seg_label, kernel_size=self.kernel_size, sigma=self.sigma,
                         border=self.border, **common)
