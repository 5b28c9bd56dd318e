"""Registered cross-entropy + MDCA."""
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import mdca_loss, validate_mdca_args

from .base import CalibrationLossBase, ClassWeightConfig


@MODELS.register_module()
class MDCALoss(CalibrationLossBase):
    r"""Cross-entropy plus the multi-class difference in confidence and accuracy, for mmseg heads.

    .. math::
        L = \frac{1}{P}\sum_n c_{y_n}(-\log p_{n,y_n})
            + \beta\,\frac{1}{C}\sum_k\Big|\frac{1}{P}\sum_n p_{n,k}
                                          - \frac{1}{P}\sum_n 1[y_n = k]\Big|

    over the ``P`` non-ignored pixels of the batch. Hebbalaguppe et al., "A Stitch in Time Saves
    Nine: A Train-Time Regularizing Loss for Improved Neural Network Calibration", CVPR 2022;
    ``beta=1``. The MDCA term is a batch statistic: ``reduction`` (``'mean'`` or ``'sum'``; ``'none'``
    is rejected) and ``avg_factor`` act on the cross-entropy term, a per-pixel ``weight`` makes both
    means weighted means, and ``class_weight`` weights the cross-entropy only (see
    :func:`calibseg.functional.losses.mdca_loss`).

    Args:
        beta: ``>= 0``, weight of the MDCA term.
        class_weight: per-class weights ``c_k`` (list, array or file path) for the cross-entropy term.
        reduction: ``'mean'`` or ``'sum'``.
        loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> decode_head = dict(loss_decode=dict(type='MDCALoss', beta=1.0))
        >>> from mmseg.registry import MODELS
        >>> MODELS.build(decode_head['loss_decode']).loss_name
        'loss_mdca'
    """

    def __init__(self, *, beta: float = 1.0, class_weight: ClassWeightConfig = None,
                 reduction: str = 'mean', loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_mdca') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._set_options(dict(beta=validate_mdca_args(beta=beta, reduction=reduction)))

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        return mdca_loss(seg_logits, seg_label, beta=self.beta, **common)
