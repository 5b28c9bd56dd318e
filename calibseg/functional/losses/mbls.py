"""Margin-based label smoothing, MbLS (Liu et al., CVPR 2022)."""
from typing import Dict, Optional, Union

import torch
from torch import Tensor

from calibseg.utils.validation import check_non_negative

from .utils import (
    ClassWeight,
    check_reduction,
    gather_target,
    prepare_pixels,
    reduce_loss,
    weighted_nll,
)


class _MarginPenalty(torch.autograd.Function):
    """Per-pixel ``sum_k ReLU(max_j z_j - margin - z_k)`` of ``(N, C, M)`` logits, fused.

    The same value as ``torch.relu(z.amax(1, keepdim=True) - margin - z).sum(1)``, with the backward
    written out: ``-g`` for every entry more than ``margin`` below the max, and minus their sum for
    the max entry (split evenly over tied maxima, as ``torch.amax`` does). The autograd version took
    about twice as long as the cross-entropy term on CPU (``max`` with indices, bool masks and the
    extra full-size temporaries are slow there). Its backward is differentiable again (the second
    derivative is 0 almost everywhere).
    """

    @staticmethod
    def forward(ctx, z: Tensor, margin: float) -> Tensor:
        z_max = z.amax(dim=1, keepdim=True)
        gap = ((z_max - margin) - z).clamp_min_(0)
        ctx.save_for_backward(z, z_max, gap)
        return gap.sum(dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        z, z_max, gap = ctx.saved_tensors
        g = grad.unsqueeze(1)
        # -g where gap > 0 (the kernel of ReLU's backward) ...
        grad_z = torch.ops.aten.threshold_backward((-g).expand_as(gap), gap, 0)
        # ... and the opposite of their sum for the maximal entries (the max is not detached).
        total = grad_z.sum(dim=1, keepdim=True)
        is_max = torch.eq(z, z_max, out=torch.empty_like(z))
        ties = is_max.sum(dim=1, keepdim=True)
        return grad_z.addcmul_(is_max, -total / ties), None


def margin_penalty(z: Tensor, margin: float) -> Tensor:
    """``(1/C) sum_k ReLU(max_j z_j - margin - z_k)`` per pixel: ``(N, C, M) -> (N, M)``."""
    return _MarginPenalty.apply(z, margin) / z.shape[1]


def validate_mbls_args(*, margin: float, alpha: float) -> Dict[str, float]:
    """Check ``margin >= 0`` and ``alpha >= 0``."""
    return dict(margin=check_non_negative('margin', margin),
                alpha=check_non_negative('alpha', alpha))


def mbls_loss(logits: Tensor, target: Tensor, *, margin: float = 10.0, alpha: float = 0.1,
              weight: Optional[Tensor] = None, class_weight: ClassWeight = None,
              ignore_index: int = 255, reduction: str = 'mean',
              avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
    r"""Cross-entropy plus the MbLS margin penalty on logit distances.

    .. math::
        L = \frac{1}{N}\sum_n c_{y_n}(-\log p_{n,y_n})
            + \alpha\,\frac{1}{NC}\sum_{n,k}\mathrm{ReLU}\big(\max_j z_{n,j} - z_{n,k} - m\big)

    with the max not detached and the mean over all ``N*C`` entries (the argmax entry contributes
    0), as in the authors' code. Liu et al., "The Devil is in the Margins: Margin-based Label
    Smoothing for Network Calibration", CVPR 2022; ``margin=10``, ``alpha=0.1`` from the code.
    Ignored pixels take no part in either term (the code removes them first). The penalty is a
    per-pixel sum, so ``weight`` scales both terms of each pixel. At tied maxima the gradient of
    the max is split evenly over them (as ``torch.amax`` does), where the code's ``torch.max``
    sends it to one entry: same value and summed gradient, and ties have probability 0.

    Args:
        logits: ``(N, C, *spatial)`` logits. fp16/bf16 are computed in float32.
        target: ``(N, *spatial)`` integer labels in ``[0, C)`` or ``ignore_index``.
        margin: ``m >= 0``, the tolerated distance to the largest logit.
        alpha: ``>= 0``, weight of the penalty.
        weight: optional per-pixel weight broadcastable to ``target.shape`` (mmseg's
            ``seg_weight``).
        class_weight: optional per-class weight ``c_k``, applied to the cross-entropy term only.
        ignore_index, reduction, avg_factor: as in
            :func:`~calibseg.functional.losses.softmax_focal_loss`.

    Returns:
        Scalar loss (``(N, *spatial)`` per-pixel ``CE_n + alpha * penalty_n`` for
        ``reduction='none'``).

    Raises:
        ValueError: on a negative ``margin`` or ``alpha``, bad labels, shapes or reduction.
    """
    check_reduction(reduction, avg_factor)
    validate_mbls_args(margin=margin, alpha=alpha)
    pixels = prepare_pixels(logits, target, ignore_index=ignore_index, weight=weight)
    log_p_y = gather_target(torch.log_softmax(pixels.logits, dim=1), pixels)
    penalty = margin_penalty(pixels.logits, margin)
    loss = weighted_nll(log_p_y, class_weight, pixels) + alpha * penalty
    return reduce_loss(loss, pixels, reduction=reduction, avg_factor=avg_factor)
