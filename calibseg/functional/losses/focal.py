"""Softmax focal loss (Lin et al., ICCV 2017), for calibration as in Mukhoti et al. (2020)."""
from typing import Optional, Union

import torch
from torch import Tensor

from calibseg.utils.validation import check_non_negative

from .fused import log_softmax_terms
from .utils import (
    ClassWeight,
    Pixels,
    check_reduction,
    defer_value_checks,
    prepare_pixels,
    reduce_loss,
    target_class_weight,
)

Gamma = Union[float, Tensor]


def validate_focal_args(*, gamma: Gamma) -> Gamma:
    """Check ``gamma``: a finite number ``>= 0``, or a floating tensor with all entries ``>= 0``."""
    if isinstance(gamma, Tensor):
        if not gamma.is_floating_point():
            raise ValueError(f'gamma must be a floating-point tensor, got dtype {gamma.dtype}')
        bad = ~torch.isfinite(gamma.detach()) | (gamma.detach() < 0)
        if defer_value_checks(gamma):
            torch._assert_async(~bad.any(), 'gamma must be finite and >= 0 everywhere')
            return gamma
        if bool(bad.any()):
            raise ValueError(f'gamma must be finite and >= 0 everywhere, got values '
                             f'{torch.unique(gamma.detach()[bad]).tolist()[:20]}')
        return gamma
    return check_non_negative('gamma', gamma)


def target_log_prob(pixels: Pixels) -> Tensor:
    """``log p_y`` for every pixel: ``(N, M)`` (one log-softmax and one gather; the backward pass writes
    ``g ([k = y] - p)`` in two full-size passes, see :mod:`calibseg.functional.losses.fused`)."""
    return log_softmax_terms(pixels.logits, pixels.target)[0]


def focal_term(log_p_y: Tensor, gamma: Gamma) -> Tensor:
    """Per-pixel ``-(1 - p_y)^gamma * log p_y``; ``gamma`` is a number or a per-pixel tensor.

    ``1 - p_y`` is computed as ``-expm1(log p_y)`` (accurate when ``p_y`` is close to 1) and clamped
    to the smallest normal number of the dtype, so that the gradients stay finite for
    ``0 < gamma < 1`` and, w.r.t. a tensor ``gamma``, where ``p_y`` rounds to exactly 1; the clamp
    changes no value above that number.
    """
    if not isinstance(gamma, Tensor) and gamma == 0:
        return -log_p_y
    one_minus_p = (-torch.expm1(log_p_y)).clamp_min(torch.finfo(log_p_y.dtype).tiny)
    return -one_minus_p.pow(gamma) * log_p_y


def softmax_focal_loss(logits: Tensor, target: Tensor, *, gamma: Gamma = 3.0,
                       weight: Optional[Tensor] = None, class_weight: ClassWeight = None,
                       ignore_index: int = 255, reduction: str = 'mean',
                       avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
    r"""Softmax focal loss.

    .. math::
        \mathrm{FL}_n = -c_{y_n}\,(1 - p_{n,y_n})^{\gamma_n} \log p_{n,y_n},\qquad
        p_n = \mathrm{softmax}(z_n)

    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017; ``gamma=3`` follows the
    calibration literature (Mukhoti et al., "Calibrating Deep Neural Networks using Focal Loss",
    NeurIPS 2020; MbLS; RankMixup). ``gamma=0`` is cross-entropy.

    Args:
        logits: ``(N, C, *spatial)`` logits (``(N, C)`` also works). fp16/bf16 are computed in
            float32.
        target: ``(N, *spatial)`` integer labels in ``[0, C)`` or ``ignore_index``.
        gamma: focusing parameter ``>= 0``: a number, or a tensor broadcastable to ``target.shape``
            (e.g. ``(N, *spatial)`` per pixel or ``(N, 1, 1)`` per image) for sample-wise ``gamma``
            (gamma-Net); the loss is differentiable w.r.t. a tensor ``gamma``.
        weight: optional per-pixel weight broadcastable to ``target.shape`` (mmseg's
            ``seg_weight``).
        class_weight: optional per-class weight ``c_k`` (length ``C``), multiplying each pixel's
            loss.
        ignore_index: label of pixels excluded from the loss and from the mean's denominator.
        reduction: ``'mean'`` over non-ignored pixels, ``'sum'``, or ``'none'`` (``(N, *spatial)``
            map, zeros at ignored pixels).
        avg_factor: replaces the number of non-ignored pixels as the denominator of ``'mean'``.

    Returns:
        Scalar loss (``(N, *spatial)`` for ``reduction='none'``), float32 for half-precision logits.
        A batch with every pixel ignored gives an exact zero still connected to ``logits``.

    Raises:
        ValueError: on negative ``gamma``, bad labels, shapes or reduction.

    Note:
        As in mmseg, ``'mean'`` divides by the number of non-ignored pixels, not by ``sum c_{y_n}``
        (PyTorch's ``F.cross_entropy(weight=...)`` divides by the latter).

    Example:
        >>> logits = torch.tensor([[[[2.0]], [[0.0]]]])  # (N=1, C=2, H=1, W=1)
        >>> target = torch.tensor([[[0]]])
        >>> p = torch.sigmoid(torch.tensor(2.0))
        >>> torch.allclose(softmax_focal_loss(logits, target), -(1 - p) ** 3 * p.log())
        True
    """
    check_reduction(reduction, avg_factor)
    gamma = validate_focal_args(gamma=gamma)
    pixels = prepare_pixels(logits, target, ignore_index=ignore_index, weight=weight)
    if isinstance(gamma, Tensor):
        gamma = pixels.per_pixel('gamma', gamma)
    loss = focal_term(target_log_prob(pixels), gamma)
    weights = target_class_weight(class_weight, pixels)
    if weights is not None:
        loss = loss * weights
    return reduce_loss(loss, pixels, reduction=reduction, avg_factor=avg_factor)
