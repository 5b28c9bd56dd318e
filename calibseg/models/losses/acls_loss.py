"""Registered adaptive and conditional label smoothing (ACLS), reference-code form."""
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import acls_loss, validate_acls_args

from .base import CalibrationLossBase, ClassWeightConfig


@MODELS.register_module()
class ACLSLoss(CalibrationLossBase):
    r"""ACLS for mmseg decode heads, in the form of the authors' code (not the paper's equation).

    With ``j = argmax_k z_{n,k}``, ``sg`` the stop-gradient and ``M`` the margin, over the ``P``
    non-ignored pixels:

    .. math::
        L = \frac{1}{P}\sum_n c_{y_n}(-\log p_{n,y_n})
            + \alpha\Big(\lambda_\text{pos}\frac{1}{P}\sum_n \mathrm{ReLU}(z_{n,j} - M)^2
            + \lambda_\text{neg}\frac{1}{P(C-1)}\sum_n\sum_{k\ne j}
              \mathrm{ReLU}(\mathrm{sg}(z_{n,j}) - z_{n,k} - M)^2\Big)

    Park et al., "ACLS: Adaptive and Conditional Label Smoothing for Network Calibration", ICCV
    2023. The paper's equation could not be checked, so this implements the public code's form
    (tied maxima each count in the positive term); ignored pixels take no part in either term
    (the reference code keeps them). See :func:`calibseg.functional.losses.acls_loss`.

    Args:
        pos_lambda: ``>= 0``, weight of the positive (max-logit) term.
        neg_lambda: ``>= 0``, weight of the negative (logit-distance) term.
        alpha: ``>= 0``, weight of the regulariser.
        margin: ``M >= 0``.
        class_weight: per-class weights ``c_k`` (list, array or file path) for the cross-entropy term.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> decode_head = dict(loss_decode=dict(type='ACLSLoss'))
        >>> from mmseg.registry import MODELS
        >>> MODELS.build(decode_head['loss_decode']).loss_name
        'loss_acls'
    """

    def __init__(self, *, pos_lambda: float = 1.0, neg_lambda: float = 0.1, alpha: float = 0.1,
                 margin: float = 10.0, class_weight: ClassWeightConfig = None,
                 reduction: str = 'mean', loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_acls') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._set_options(validate_acls_args(pos_lambda=pos_lambda, neg_lambda=neg_lambda,
                                             alpha=alpha, margin=margin))

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        return acls_loss(seg_logits, seg_label, pos_lambda=self.pos_lambda,
                         neg_lambda=self.neg_lambda, alpha=self.alpha, margin=self.margin,
                         **common)
