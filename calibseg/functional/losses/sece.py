r"""SECE as a training objective on a batch of pixels (the meta objective of γ-Net).

The formula lives in :func:`calibseg.functional.calibration.sece` (Gaussian-kernel Nadaraya–Watson estimate of
``E|E[correct | confidence] - confidence|``); this module turns segmentation logits into its inputs: top-label
confidences ``c_i = max_k softmax(z_i)_k`` (differentiable) and correctness ``a_i = 1[argmax_k z_{i,k} = y_i]``
(data) over the non-ignored pixels, optionally on a random subset of them.

This module imports no OpenMMLab package.
"""
from typing import Optional

import torch
from torch import Tensor

from calibseg.utils.validation import check_choice, check_positive_float, check_positive_int

from ..calibration.sece import sece
from .utils import compute_dtype, flatten_pixels

__all__ = ['sece_loss', 'validate_sece_loss_args']

METHODS = ('auto', 'exact', 'grid')


def validate_sece_loss_args(*, bandwidth: float, method: str = 'auto',
                            max_pixels: Optional[int] = None) -> None:
    """Check ``bandwidth > 0``, ``method`` and ``max_pixels`` (``None`` or an int ``>= 2``)."""
    check_positive_float('bandwidth', bandwidth)
    check_choice('method', method, METHODS)
    check_positive_int('max_pixels', max_pixels, minimum=2, allow_none=True)


def sece_loss(logits: Tensor, target: Tensor, *, bandwidth: float = 0.05, method: str = 'auto',
              ignore_index: int = 255, max_pixels: Optional[int] = None,
              generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Smooth calibration error of the non-ignored pixels of a batch, differentiable in the logits.

    .. math::
        \hat a(c) = \frac{\sum_j K_h(c - c_j)\,a_j}{\sum_j K_h(c - c_j)},\qquad
        \mathrm{SECE} = \frac1P \sum_i |\hat a(c_i) - c_i|,\qquad K_h(u) = e^{-u^2/(2h^2)}

    over the ``P`` non-ignored pixels (calibseg's definition of the Gaussian-kernel SECE of Wang & Golebiowski,
    "Meta-Regularization for Calibration", TMLR 2024). Gradients flow through the confidences only.

    Args:
        logits: ``(N, C, *spatial)`` logits, ``C >= 2``.
        target: ``(N, *spatial)`` integer labels in ``[0, C)`` or ``ignore_index``.
        bandwidth: ``h`` of the Gaussian kernel.
        method: ``'exact'``, ``'grid'`` or ``'auto'`` (see :func:`calibseg.functional.calibration.sece`; ``'auto'``
            is exact up to 4096 pixels and an ``O(P)``-memory grid evaluation above).
        ignore_index: label of pixels left out.
        max_pixels: evaluate SECE on a uniformly drawn subset of at most this many non-ignored pixels (without
            replacement), e.g. to bound the memory of the softmax over a large batch; ``None`` uses every pixel.
        generator: the ``torch.Generator`` that draws the subset (a CPU or the logits' device generator);
            ``None`` uses torch's global generator.

    Returns:
        Scalar tensor in ``[0, 1]`` (a fraction, not percent); an exact zero connected to ``logits`` when every
        pixel is ignored. Half-precision logits are evaluated in float32.

    Example:
        >>> logits = torch.tensor([[[[3.0, 0.0]], [[0.0, 1.0]]]])  # (N=1, C=2, H=1, W=2)
        >>> value = sece_loss(logits, torch.tensor([[[0, 0]]]))
    """
    validate_sece_loss_args(bandwidth=bandwidth, method=method, max_pixels=max_pixels)
    rows, labels = flatten_pixels(logits, target, ignore_index=ignore_index)
    if rows.shape[0] == 0:
        return logits.sum() * 0.0
    if max_pixels is not None and rows.shape[0] > max_pixels:
        device = generator.device if generator is not None else torch.device('cpu')
        keep = torch.randperm(rows.shape[0], generator=generator, device=device)[:max_pixels]
        keep = keep.to(rows.device)
        rows, labels = rows[keep], labels[keep]
    probs = torch.softmax(rows.to(compute_dtype(rows.dtype)), dim=1)
    confidence, prediction = probs.max(dim=1)
    return sece(confidence, prediction == labels, bandwidth=float(bandwidth), method=method)
