"""Registered label-smoothed cross-entropy."""
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import label_smoothing_loss, validate_label_smoothing_args

from .base import CalibrationLossBase, ClassWeightConfig


@MODELS.register_module()
class LabelSmoothingLoss(CalibrationLossBase):
    r"""Cross-entropy with uniform label smoothing for mmseg decode heads.

    .. math::
        \mathrm{LS} = \frac{1}{P}\sum_n c_{y_n}\Big[(1 - \alpha)(-\log p_{n,y_n})
                      + \alpha\,\tfrac{1}{C}\textstyle\sum_k(-\log p_{n,k})\Big]

    Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016;
    ``smoothing=0.05`` as in the MbLS and ACLS segmentation experiments (RankMixup uses 0.1/0.2).

    Args:
        smoothing: ``alpha`` in ``[0, 1)``.
        class_weight: per-class weights ``c_k`` (list, array or file path) or ``None``; weights the
            whole per-pixel loss by the pixel's label.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> decode_head = dict(loss_decode=dict(type='LabelSmoothingLoss', smoothing=0.05))
        >>> from mmseg.registry import MODELS
        >>> MODELS.build(decode_head['loss_decode']).loss_name
        'loss_ls'
    """

    def __init__(self, *, smoothing: float = 0.05, class_weight: ClassWeightConfig = None,
                 reduction: str = 'mean', loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_ls') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._set_options(dict(smoothing=validate_label_smoothing_args(smoothing=smoothing)))

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        return label_smoothing_loss(seg_logits, seg_label, smoothing=self.smoothing, **common)
