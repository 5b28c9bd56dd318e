"""Registered softmax focal loss."""
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import softmax_focal_loss
from calibseg.utils.validation import check_non_negative

from .base import CalibrationLossBase, ClassWeightConfig


@MODELS.register_module()
class SoftmaxFocalLoss(CalibrationLossBase):
    r"""Softmax focal loss for mmseg decode heads.

    .. math::
        \mathrm{FL} = \frac{1}{P}\sum_{n} -c_{y_n}\,(1 - p_{n,y_n})^{\gamma} \log p_{n,y_n}

    over the ``P`` non-ignored pixels. Lin et al., "Focal Loss for Dense Object Detection", ICCV
    2017; ``gamma=3`` as in the calibration literature (Mukhoti et al., NeurIPS 2020). Unlike mmseg's
    ``FocalLoss`` (sigmoid only) this is the softmax form. The module takes a number; a per-pixel or
    per-image ``gamma`` tensor (e.g. from a gamma-Net) goes to
    :func:`calibseg.functional.losses.softmax_focal_loss`, which is differentiable w.r.t. it.

    Args:
        gamma: focusing parameter ``>= 0`` (0 gives cross-entropy).
        class_weight: per-class weights ``c_k`` (list, array or file path) or ``None``.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> decode_head = dict(loss_decode=dict(type='SoftmaxFocalLoss', gamma=3.0))
        >>> from mmseg.registry import MODELS
        >>> MODELS.build(decode_head['loss_decode']).loss_name
        'loss_focal'
    """

    def __init__(self, *, gamma: float = 3.0, class_weight: ClassWeightConfig = None,
                 reduction: str = 'mean', loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_focal') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._set_options(dict(gamma=check_non_negative('gamma', gamma)))

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        return softmax_focal_loss(seg_logits, seg_label, gamma=self.gamma, **common)
