"""Registered neighbor-aware calibration loss (NACL)."""
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import nacl_loss, validate_nacl_args

from .base import CalibrationLossBase, ClassWeightConfig


@MODELS.register_module()
class NACLLoss(CalibrationLossBase):
    r"""Neighbor-aware calibration loss for mmseg decode heads.

    .. math::
        L = \frac{1}{P}\sum_n \Big[c_{y_n}(-\log p_{n,y_n})
            + \alpha\,\frac{1}{C}\sum_k \big|\tau_{n,k} - z_{n,k}\big|\Big]

    over the ``P`` non-ignored pixels, ``tau`` the class proportions of the labels in the ``k x k``
    window (``'mean'`` or ``'gaussian'`` kernel) renormalised over valid neighbours (ignored ones
    never count; out-of-image ones are excluded with ``border='renormalise'`` or replicated, never
    counted as class 0 as the authors' zero padding does); ``distance='l2'`` squares the gap.
    Murugesan et al., "Trust your neighbours: Penalty-based constraints for model calibration",
    MICCAI 2023; ``alpha=0.1``, ``kernel_size=3``, mean kernel, L1 (as MONAI's ``NACLLoss``).

    Args:
        alpha: ``>= 0``, weight of the penalty.
        kernel_size: odd ``k >= 1``.
        kernel: ``'mean'`` or ``'gaussian'``.
        sigma: ``> 0``, width of the ``'gaussian'`` kernel.
        distance: ``'l1'`` or ``'l2'``.
        border: ``'renormalise'`` or ``'replicate'``.
        class_weight: per-class weights ``c_k`` (list, array or file path) for the cross-entropy term.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> decode_head = dict(loss_decode=dict(type='NACLLoss', alpha=0.1, kernel_size=3))
    """

    def __init__(self, *, alpha: float = 0.1, kernel_size: int = 3, kernel: str = 'mean',
                 sigma: float = 1.0, distance: str = 'l1', border: str = 'renormalise',
                 class_weight: ClassWeightConfig = None, reduction: str = 'mean',
                 loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_nacl') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._set_options(validate_nacl_args(alpha=alpha, kernel_size=kernel_size, kernel=kernel,
                                             sigma=sigma, distance=distance, border=border))

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        return nacl_loss(seg_logits, seg_label, alpha=self.alpha, kernel_size=self.kernel_size,
                         kernel=self.kernel, sigma=self.sigma, distance=self.distance,
                         border=self.border, **common)
