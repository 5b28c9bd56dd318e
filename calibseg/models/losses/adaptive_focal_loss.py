"""Registered sample-dependent focal loss (FLSD-53)."""
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import adaptive_focal_loss, validate_adaptive_focal_args

from .base import CalibrationLossBase, ClassWeightConfig


@MODELS.register_module()
class AdaptiveFocalLoss(CalibrationLossBase):
    r"""Sample-dependent focal loss FLSD-53 for mmseg decode heads.

    .. math::
        \mathrm{FLSD} = \frac{1}{P}\sum_{n} -c_{y_n}\,(1 - p_{n,y_n})^{\gamma_n} \log p_{n,y_n},
        \qquad \gamma_n = \gamma_\text{hard}\ \text{if}\ \mathrm{sg}(p_{n,y_n}) < t\
        \text{else}\ \gamma_\text{easy}

    Mukhoti et al., "Calibrating Deep Neural Networks using Focal Loss", NeurIPS 2020. The defaults
    (``gamma_hard=5``, ``gamma_easy=3``, ``threshold=0.2``) are FLSD-53; ``gamma`` is chosen per
    pixel from the detached ``p_y``, for all pixels at once.

    Args:
        gamma_hard: ``gamma >= 0`` where ``p_y < threshold``.
        gamma_easy: ``gamma >= 0`` elsewhere.
        threshold: probability threshold in ``[0, 1]``.
        class_weight: per-class weights ``c_k`` (list, array or file path) or ``None``.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> decode_head = dict(loss_decode=dict(type='AdaptiveFocalLoss'))
        >>> from mmseg.registry import MODELS
        >>> MODELS.build(decode_head['loss_decode']).loss_name
        'loss_adaptive_focal'
    """

    def __init__(self, *, gamma_hard: float = 5.0, gamma_easy: float = 3.0, threshold: float = 0.2,
                 class_weight: ClassWeightConfig = None, reduction: str = 'mean',
                 loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_adaptive_focal') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._set_options(validate_adaptive_focal_args(
            gamma_hard=gamma_hard, gamma_easy=gamma_easy, threshold=threshold))

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        return adaptive_focal_loss(seg_logits, seg_label, gamma_hard=self.gamma_hard,
                                   gamma_easy=self.gamma_easy, threshold=self.threshold, **common)
