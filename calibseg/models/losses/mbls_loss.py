"""Registered margin-based label smoothing (MbLS)."""
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import mbls_loss, validate_mbls_args

from .base import CalibrationLossBase, ClassWeightConfig


@MODELS.register_module()
class MbLSLoss(CalibrationLossBase):
    r"""Margin-based label smoothing for mmseg decode heads.

    .. math::
        L = \frac{1}{P}\sum_n c_{y_n}(-\log p_{n,y_n})
            + \alpha\,\frac{1}{PC}\sum_{n,k}\mathrm{ReLU}\big(\max_j z_{n,j} - z_{n,k} - m\big)

    over the ``P`` non-ignored pixels, the max not detached. Liu et al., "The Devil is in the
    Margins: Margin-based Label Smoothing for Network Calibration", CVPR 2022; ``margin=10``,
    ``alpha=0.1`` from the authors' code.

    Args:
        margin: ``m >= 0``.
        alpha: ``>= 0``, weight of the margin penalty.
        class_weight: per-class weights ``c_k`` (list, array or file path) for the cross-entropy term.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> decode_head = dict(loss_decode=dict(type='MbLSLoss', margin=10.0, alpha=0.1))
        >>> from mmseg.registry import MODELS
        >>> MODELS.build(decode_head['loss_decode']).loss_name
        'loss_mbls'
    """

    def __init__(self, *, margin: float = 10.0, alpha: float = 0.1,
                 class_weight: ClassWeightConfig = None, reduction: str = 'mean',
                 loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_mbls') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._set_options(validate_mbls_args(margin=margin, alpha=alpha))

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        return mbls_loss(seg_logits, seg_label, margin=self.margin, alpha=self.alpha, **common)
