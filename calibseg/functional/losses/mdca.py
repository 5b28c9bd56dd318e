"""Cross-entropy plus the multi-class difference in confidence and accuracy, MDCA (CVPR 2022)."""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from calibseg.utils.validation import check_non_negative

from .fused import log_softmax_terms
from .utils import (
    ClassWeight,
    Pixels,
    check_reduction,
    prepare_pixels,
    reduce_loss,
    weighted_nll,
)


def validate_mdca_args(*, beta: float, reduction: str = 'mean') -> float:
    """Check ``beta >= 0`` and that ``reduction`` is not ``'none'`` (MDCA is a batch statistic)."""
    if reduction == 'none':
        raise ValueError("reduction='none' is not defined for MDCA: its calibration term is a "
                         "statistic of the whole batch, not a sum of per-pixel terms; "
                         "use 'mean' or 'sum'")
    return check_non_negative('beta', beta)


def _pixel_weights(pixels: Pixels, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """``(N, M)`` weights of the pixels in MDCA's means (0 at ignored pixels) and their total (> 0)."""
    pixel_weight = pixels.valid.to(dtype)
    if pixels.weight is None:
        count = pixels.num_valid
        if isinstance(count, Tensor):  # no host sync on the device path
            return pixel_weight, count.to(dtype).clamp_min(1.0)
        return pixel_weight, pixel_weight.new_tensor(float(max(count, 1)))
    pixel_weight = torch.where(pixels.valid, pixels.weight, pixel_weight)
    return pixel_weight, pixel_weight.sum().clamp_min(torch.finfo(dtype).tiny)


def _mdca_from_sums(prob_sum: Tensor, pixel_weight: Tensor, total: Tensor, pixels: Pixels) -> Tensor:
    """The MDCA term from the ``(C,)`` weighted probability sums."""
    label_sum = prob_sum.new_zeros(pixels.num_classes).index_add_(
        0, pixels.target.reshape(-1), pixel_weight.reshape(-1))
    return (prob_sum - label_sum).abs().mean() / total


def mdca_term(probs: Tensor, pixels: Pixels) -> Tensor:
    r"""``(1/C) sum_k |mean_n p_{n,k} - mean_n 1[y_n = k]|`` over the non-ignored pixels.

    Args:
        probs: ``(N, C, M)`` softmax probabilities.
        pixels: the batch they were computed from.

    With a per-pixel ``weight`` both means are weighted means (``sum_n w_n x_n / sum_n w_n``). An
    empty batch (or zero total weight) gives 0, connected to the graph. Ignored pixels enter the
    sums multiplied by 0 (a select would cost 2x here), so their probabilities must be finite, which
    they are for finite logits. :func:`mdca_loss` computes the same term inside its fused log-softmax
    (:func:`~calibseg.functional.losses.fused.log_softmax_terms`).
    """
    pixel_weight, total = _pixel_weights(pixels, probs.dtype)
    prob_sum = (probs * pixel_weight.unsqueeze(1)).sum(dim=(0, 2))
    return _mdca_from_sums(prob_sum, pixel_weight, total, pixels)


def mdca_loss(logits: Tensor, target: Tensor, *, beta: float = 1.0,
              weight: Optional[Tensor] = None, class_weight: ClassWeight = None,
              ignore_index: int = 255, reduction: str = 'mean',
              avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
    r"""Cross-entropy plus ``beta`` times the MDCA calibration term.

    .. math::
        L = \frac{1}{N}\sum_n c_{y_n}(-\log p_{n,y_n})
            + \beta\,\frac{1}{C}\sum_k\Big|\frac{1}{N}\sum_n p_{n,k}
                                          - \frac{1}{N}\sum_n 1[y_n = k]\Big|

    over the non-ignored pixels of the batch. Hebbalaguppe et al., "A Stitch in Time Saves Nine: A
    Train-Time Regularizing Loss for Improved Neural Network Calibration", CVPR 2022; ``beta=1``.
    Unlike the reference code (which hard-codes ``.cuda()``) this is device-agnostic.

    Choices (the MDCA term is a statistic of the whole batch, not a per-pixel sum):

    * ``reduction`` and ``avg_factor`` apply to the cross-entropy term; the MDCA term is added once,
      after that reduction (so ``'sum'`` gives ``sum_n CE_n + beta * MDCA``). ``reduction='none'``
      raises.
    * a per-pixel ``weight`` scales the cross-entropy of each pixel and turns both means of the MDCA
      term into weighted means (pixels of weight 0, e.g. dropped by OHEM, leave the term).
    * ``class_weight`` applies to the cross-entropy term only.

    Args:
        logits: ``(N, C, *spatial)`` logits. fp16/bf16 are computed in float32.
        target: ``(N, *spatial)`` integer labels in ``[0, C)`` or ``ignore_index``.
        beta: ``>= 0``, weight of the MDCA term.
        weight, class_weight, ignore_index, avg_factor: see above and
            :func:`~calibseg.functional.losses.softmax_focal_loss`.
        reduction: ``'mean'`` or ``'sum'`` (of the cross-entropy term).

    Returns:
        Scalar loss.

    Raises:
        ValueError: on a negative ``beta``, ``reduction='none'``, bad labels, shapes or reduction.
    """
    check_reduction(reduction, avg_factor)
    validate_mdca_args(beta=beta, reduction=reduction)
    pixels = prepare_pixels(logits, target, ignore_index=ignore_index, weight=weight)
    pixel_weight, total = _pixel_weights(pixels, pixels.logits.dtype)
    # one log-softmax for both terms; the class sums of the probabilities come out of the same pass
    log_p_y, _, prob_sum = log_softmax_terms(pixels.logits, pixels.target, prob_weight=pixel_weight)
    ce = reduce_loss(weighted_nll(log_p_y, class_weight, pixels), pixels,
                     reduction=reduction, avg_factor=avg_factor)
    return ce + beta * _mdca_from_sums(prob_sum, pixel_weight, total, pixels)

