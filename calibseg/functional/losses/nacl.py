"""Neighbor-aware calibration loss, NACL (Murugesan et al., MICCAI 2023 / MedIA 2024)."""
from typing import Dict, Optional, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from calibseg.utils.validation import check_choice, check_non_negative, check_positive_float

from .neighbourhood import BORDERS, check_kernel_size, label_neighbourhood
from .svls import check_image_batch
from .utils import (
    ClassWeight,
    check_reduction,
    prepare_pixels,
    reduce_loss,
    target_class_weight,
)

NACL_KERNELS = ('mean', 'gaussian')
DISTANCES = ('l1', 'l2')


class _NACLTerms(torch.autograd.Function):
    """Per-pixel ``-log p_y`` and ``sum_k |tau_k - z_k|`` (or ``sum_k (tau_k - z_k)^2``), fused: two ``(N, H, W)``.

    ``tau = counts / total``. The backward is written out, ``g_ce * (p - e_y) + g_pen * sign(z - tau)``
    (``2 (z - tau)`` for ``l2``): one exponential and in-place updates instead of autograd's chain of full-size
    temporaries (the plain autograd version was about 2x slower on CPU). First derivatives only.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, counts: Tensor, total: Tensor, squared: bool):
        log_probs = torch.log_softmax(logits, dim=1)
        nll = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
        safe = torch.where(total > 0, total, torch.ones_like(total))
        gap = torch.addcmul(logits, counts, -1.0 / safe, out=counts)  # z - tau, in the counts' buffer
        if squared:
            penalty = (gap * gap).sum(dim=1)
            ctx.save_for_backward(log_probs, target, gap)
        else:
            sign = torch.sign(gap)
            penalty = gap.abs_().sum(dim=1)
            ctx.save_for_backward(log_probs, target, sign)
        ctx.squared = squared
        return nll, penalty

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll: Tensor, grad_penalty: Tensor):
        log_probs, target, slope = ctx.saved_tensors
        g = grad_nll.unsqueeze(1)
        grad = torch.exp(log_probs).mul_(g).scatter_add_(1, target.unsqueeze(1), -g)
        grad.addcmul_(slope, grad_penalty.unsqueeze(1), value=2.0 if ctx.squared else 1.0)
        return grad, None, None, None, None


def validate_nacl_args(*, alpha: float, kernel_size: int, kernel: str, sigma: float, distance: str,
                       border: str) -> Dict[str, object]:
    """Check ``alpha >= 0``, an odd ``kernel_size >= 1``, ``kernel`` in ``('mean', 'gaussian')``,
    ``sigma > 0``, ``distance`` in ``('l1', 'l2')`` and ``border`` in ``('renormalise', 'replicate')``."""
    return dict(alpha=check_non_negative('alpha', alpha), kernel_size=check_kernel_size(kernel_size),
                kernel=check_choice('kernel', kernel, NACL_KERNELS), sigma=check_positive_float('sigma', sigma),
                distance=check_choice('distance', distance, DISTANCES),
                border=check_choice('border', border, BORDERS))


def nacl_loss(logits: Tensor, target: Tensor, *, alpha: float = 0.1, kernel_size: int = 3,
              kernel: str = 'mean', sigma: float = 1.0, distance: str = 'l1', border: str = 'renormalise',
              weight: Optional[Tensor] = None, class_weight: ClassWeight = None, ignore_index: int = 255,
              reduction: str = 'mean', avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
    r"""Cross-entropy plus a penalty pulling the logits towards the neighbourhood's class proportions.

    .. math::
        \mathrm{NACL}_n = c_{y_n}(-\log p_{n,y_n})
            + \alpha\,\frac{1}{C}\sum_k \big|\tau_{n,k} - z_{n,k}\big|, \qquad
        \tau_{n,k} = \sum_d a_d(n)\,[y_{n+d} = k]

    (``|.|^2`` for ``distance='l2'``), averaged over the valid pixels: the penalty is the mean over
    valid pixels and classes, the authors' plain mean over all ``N*C*H*W`` elements restricted to
    non-ignored pixels. ``a_d`` is the ``k x k`` ``'mean'`` (default) or ``'gaussian'`` kernel
    renormalised over the valid neighbours (:mod:`~calibseg.functional.losses.neighbourhood`:
    ignored neighbours excluded, borders renormalised or replicated; the authors' code pads the label
    map with zeros, so out-of-image neighbours count as class 0 there). Murugesan et al., "Trust your
    neighbours: Penalty-based constraints for model calibration", MICCAI 2023 (extended in Medical
    Image Analysis 2024); ``alpha=0.1``, ``kernel_size=3``, mean kernel, L1 as in MONAI's
    ``NACLLoss``.

    Args:
        logits: ``(N, C, H, W)`` logits. fp16/bf16 are computed in float32.
        target: ``(N, H, W)`` integer labels in ``[0, C)`` or ``ignore_index``.
        alpha: ``>= 0``, weight of the penalty.
        kernel_size: odd ``k >= 1`` (``k = 1`` pulls the logits towards the one-hot label).
        kernel: ``'mean'`` or ``'gaussian'``.
        sigma: ``> 0``, width of the ``'gaussian'`` kernel in pixels (unused for ``'mean'``).
        distance: ``'l1'`` or ``'l2'`` (squared difference).
        border: ``'renormalise'`` or ``'replicate'``.
        weight: optional per-pixel weight broadcastable to ``target.shape`` (mmseg's
            ``seg_weight``); scales both terms of each pixel.
        class_weight: optional per-class weight ``c_k``, applied to the cross-entropy term only.
        ignore_index, reduction, avg_factor: as in
            :func:`~calibseg.functional.losses.softmax_focal_loss`; ignored pixels get no loss.

    Returns:
        Scalar loss (``(N, H, W)`` per-pixel ``CE_n + alpha * penalty_n`` for ``reduction='none'``).

    Raises:
        ValueError: on a bad option, logits that are not 4-D, bad labels, shapes or reduction.

    Example:
        >>> logits = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])  # two pixels of class 0
        >>> ce = torch.nn.functional.cross_entropy(logits, torch.zeros(1, 1, 2, dtype=torch.long))
        >>> torch.isclose(nacl_loss(logits, torch.zeros(1, 1, 2, dtype=torch.long)), ce).item()
        True
    """
    check_reduction(reduction, avg_factor)
    options = validate_nacl_args(alpha=alpha, kernel_size=kernel_size, kernel=kernel, sigma=sigma,
                                 distance=distance, border=border)
    check_image_batch(logits)
    pixels = prepare_pixels(logits, target, ignore_index=ignore_index, weight=weight)
    logits = pixels.logits.reshape(pixels.logits.shape[:2] + target.shape[1:])
    labels = pixels.target.reshape(target.shape)
    hood = label_neighbourhood(labels, pixels.valid.reshape(target.shape), pixels.num_classes,
                               kernel=options['kernel'], kernel_size=options['kernel_size'], sigma=options['sigma'],
                               border=options['border'], dtype=logits.dtype)
    nll, penalty = _NACLTerms.apply(logits, labels, hood.counts, hood.total, options['distance'] == 'l2')
    nll, penalty = nll.reshape(pixels.valid.shape), penalty.reshape(pixels.valid.shape)
    weights = target_class_weight(class_weight, pixels)
    nll = nll if weights is None else nll * weights
    loss = nll + (options['alpha'] / pixels.num_classes) * penalty
    return reduce_loss(loss, pixels, reduction=reduction, avg_factor=avg_factor)
