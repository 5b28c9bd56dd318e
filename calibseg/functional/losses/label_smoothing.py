"""Cross-entropy with uniform label smoothing (Szegedy et al., CVPR 2016)."""
from typing import Optional, Union

from torch import Tensor

from calibseg.utils.validation import check_in_range

from .fused import log_softmax_terms
from .utils import (
    ClassWeight,
    check_reduction,
    prepare_pixels,
    reduce_loss,
    target_class_weight,
)


def validate_label_smoothing_args(*, smoothing: float) -> float:
    """Check ``smoothing`` in ``[0, 1)``."""
    return check_in_range('smoothing', smoothing, 0.0, 1.0, high_inclusive=False)


def label_smoothing_loss(logits: Tensor, target: Tensor, *, smoothing: float = 0.05,
                         weight: Optional[Tensor] = None, class_weight: ClassWeight = None,
                         ignore_index: int = 255, reduction: str = 'mean',
                         avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
    r"""Label-smoothed cross-entropy.

    .. math::
        \mathrm{LS}_n = c_{y_n}\Big[(1 - \alpha)\,(-\log p_{n,y_n})
                        + \alpha\,\tfrac{1}{C}\textstyle\sum_k (-\log p_{n,k})\Big]

    i.e. cross-entropy against the target ``(1 - alpha) onehot(y) + alpha / C`` (the smoothed mass
    is spread over all ``C`` classes, the true one included). Szegedy et al., "Rethinking the
    Inception Architecture for Computer Vision", CVPR 2016; ``smoothing=0.05`` as in the MbLS and
    ACLS segmentation experiments.

    Args:
        logits: ``(N, C, *spatial)`` logits. fp16/bf16 are computed in float32.
        target: ``(N, *spatial)`` integer labels in ``[0, C)`` or ``ignore_index``.
        smoothing: ``alpha`` in ``[0, 1)``; ``0`` is cross-entropy.
        weight: optional per-pixel weight broadcastable to ``target.shape`` (mmseg's
            ``seg_weight``).
        class_weight: optional per-class weight ``c_k``, applied to the whole per-pixel loss by the
            pixel's label (as mmseg's ``CrossEntropyLoss`` weights its per-pixel loss).
        ignore_index, reduction, avg_factor: as in
            :func:`~calibseg.functional.losses.softmax_focal_loss`.

    Returns:
        Scalar loss (``(N, *spatial)`` for ``reduction='none'``).

    Raises:
        ValueError: on ``smoothing`` outside ``[0, 1)``, bad labels, shapes or reduction.
    """
    check_reduction(reduction, avg_factor)
    validate_label_smoothing_args(smoothing=smoothing)
    pixels = prepare_pixels(logits, target, ignore_index=ignore_index, weight=weight)
    log_p_y, mean_log_p, _ = log_softmax_terms(pixels.logits, pixels.target, with_mean=True)
    loss = -(1.0 - smoothing) * log_p_y - smoothing * mean_log_p
    weights = target_class_weight(class_weight, pixels)
    if weights is not None:
        loss = loss * weights
    return reduce_loss(loss, pixels, reduction=reduction, avg_factor=avg_factor)
