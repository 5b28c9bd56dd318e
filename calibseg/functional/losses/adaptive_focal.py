"""Sample-dependent focal loss FLSD-53 (Mukhoti et al., NeurIPS 2020), vectorised over pixels."""
from typing import Dict, Optional, Union

import torch
from torch import Tensor

from calibseg.utils.validation import check_in_range, check_non_negative

from .focal import focal_term, target_log_prob
from .utils import (
    ClassWeight,
    check_reduction,
    prepare_pixels,
    reduce_loss,
    target_class_weight,
)


def validate_adaptive_focal_args(*, gamma_hard: float, gamma_easy: float,
                                 threshold: float) -> Dict[str, float]:
    """Check the FLSD options: both gammas ``>= 0`` and ``threshold`` in ``[0, 1]``."""
    return dict(gamma_hard=check_non_negative('gamma_hard', gamma_hard),
                gamma_easy=check_non_negative('gamma_easy', gamma_easy),
                threshold=check_in_range('threshold', threshold, 0.0, 1.0, high_inclusive=True))


def adaptive_focal_loss(logits: Tensor, target: Tensor, *, gamma_hard: float = 5.0,
                        gamma_easy: float = 3.0, threshold: float = 0.2,
                        weight: Optional[Tensor] = None, class_weight: ClassWeight = None,
                        ignore_index: int = 255, reduction: str = 'mean',
                        avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
    r"""Adaptive (sample-dependent) focal loss, FLSD-53 by default.

    .. math::
        \mathrm{FLSD}_n = -c_{y_n}\,(1 - p_{n,y_n})^{\gamma_n} \log p_{n,y_n},\qquad
        \gamma_n = \begin{cases} \gamma_\text{hard} & \text{if } \mathrm{sg}(p_{n,y_n}) < t \\
                                 \gamma_\text{easy} & \text{otherwise} \end{cases}

    Mukhoti et al., "Calibrating Deep Neural Networks using Focal Loss", NeurIPS 2020. FLSD-53 is
    ``gamma_hard=5``, ``gamma_easy=3``, ``threshold=0.2`` (the reference schedule also has a
    ``[0.2, 0.5)`` band, but with ``gamma=3`` like ``p >= 0.5``, so it merges into ``gamma_easy``).
    The choice of ``gamma`` uses the detached ``p_y`` (the reference code picks it with
    ``.item()``); the loss itself is differentiated through ``p_y`` as in the focal loss. Unlike the
    reference code, which loops over samples in Python, ``gamma`` is chosen for all pixels at once.

    Args:
        logits: ``(N, C, *spatial)`` logits. fp16/bf16 are computed in float32.
        target: ``(N, *spatial)`` integer labels in ``[0, C)`` or ``ignore_index``.
        gamma_hard: ``gamma`` for pixels with ``p_y < threshold`` (``>= 0``).
        gamma_easy: ``gamma`` for the other pixels (``>= 0``).
        threshold: probability threshold in ``[0, 1]``.
        weight, class_weight, ignore_index, reduction, avg_factor: as in
            :func:`~calibseg.functional.losses.softmax_focal_loss`.

    Returns:
        Scalar loss (``(N, *spatial)`` for ``reduction='none'``).

    Raises:
        ValueError: on a negative gamma, a threshold outside ``[0, 1]``, bad labels, shapes or
            reduction.
    """
    check_reduction(reduction, avg_factor)
    validate_adaptive_focal_args(gamma_hard=gamma_hard, gamma_easy=gamma_easy, threshold=threshold)
    pixels = prepare_pixels(logits, target, ignore_index=ignore_index, weight=weight)
    log_p_y = target_log_prob(pixels)
    hard = log_p_y.detach().exp() < threshold
    gamma = torch.where(hard, float(gamma_hard), float(gamma_easy)).to(log_p_y.dtype)
    loss = focal_term(log_p_y, gamma)
    weights = target_class_weight(class_weight, pixels)
    if weights is not None:
        loss = loss * weights
    return reduce_loss(loss, pixels, reduction=reduction, avg_factor=avg_factor)
