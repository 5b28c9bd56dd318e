"""Shared stages of the saliency measures: input checks, optional min-max rescaling, threshold counts.

Every measure in :mod:`calibseg.functional.saliency` takes one image at a time:

* ``pred``: ``(H, W)`` foreground probabilities in ``[0, 1]`` (what mmseg stores in ``seg_logits`` for
  one-channel heads), computed in float64;
* ``gt``: ``(H, W)`` ground truth in ``{0, 1}`` (bool or integer; ignored pixels are not supported: the
  structural measures are defined on whole maps).

Thresholded measures (F-measure, E-measure) use the 256 thresholds of the saliency literature: with
:math:`q = \\lfloor 255\\,p \\rfloor`, a pixel is foreground at threshold :math:`k \\in \\{0, \\dots, 255\\}`
iff :math:`q \\ge k` (i.e. :math:`p \\ge k/255`); :math:`k = 0` marks every pixel foreground. This is the
quantisation of the public evaluation code (8-bit maps, ``pysodmetrics``).

This module imports no OpenMMLab package.
"""
from typing import Tuple

import torch
from torch import Tensor

NUM_THRESHOLDS = 256
"""Number of thresholds of the F- and E-measure curves (``k = 0, ..., 255``)."""

EPS = float(torch.finfo(torch.float64).eps)
"""MATLAB's ``eps`` (2.2e-16), used where the authors' code uses it."""


def check_saliency_pair(pred: Tensor, gt: Tensor, *, probabilities: bool = True) -> Tuple[Tensor, Tensor]:
    """Validate one prediction / ground-truth pair; return ``(pred float64, gt bool)``.

    Args:
        pred: ``(H, W)`` real tensor; with ``probabilities=True`` every value must lie in ``[0, 1]``.
        gt: ``(H, W)`` tensor of 0/1 values (bool, integer or float).
        probabilities: check the ``[0, 1]`` range of ``pred`` (``False`` for raw maps that are
            min-max rescaled afterwards).

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on shapes other than the same ``(H, W)``, an empty map, non-finite or out-of-range
            predictions, or ground-truth values other than 0 and 1.
    """
    for name, value in (('pred', pred), ('gt', gt)):
        if not isinstance(value, Tensor):
            raise TypeError(f'{name} must be a torch.Tensor, got {type(value).__name__}')
    if pred.dim() != 2 or gt.shape != pred.shape:
        raise ValueError(f'pred and gt must be (H, W) maps of the same shape, got pred {tuple(pred.shape)} '
                         f'and gt {tuple(gt.shape)}')
    if pred.numel() == 0:
        raise ValueError(f'pred and gt must not be empty, got shape {tuple(pred.shape)}')
    if pred.is_complex() or pred.dtype == torch.bool:
        raise ValueError(f'pred must be a real-valued map, got dtype {pred.dtype}')
    pred = pred.detach().to(torch.float64)
    if not bool(torch.isfinite(pred).all()):
        raise ValueError('pred holds non-finite values')
    if probabilities and (float(pred.min()) < 0.0 or float(pred.max()) > 1.0):
        raise ValueError(f'pred must hold foreground probabilities in [0, 1], got values in '
                         f'[{float(pred.min()):g}, {float(pred.max()):g}]')
    gt = gt.detach()
    if gt.dtype != torch.bool:
        bad = (gt != 0) & (gt != 1)
        if bool(bad.any()):
            values = torch.unique(gt[bad]).tolist()[:10]
            raise ValueError(f'gt must hold 0 (background) and 1 (foreground) only, got {values} '
                             '(binarise 0/255 masks first; ignored pixels are not supported)')
        gt = gt != 0
    return pred, gt


def minmax_rescale(pred: Tensor) -> Tensor:
    r"""Per-image min-max rescaling :math:`(p - \min p) / (\max p - \min p)` (unchanged if constant).

    The public saliency evaluation code (and ``pysodmetrics``' default ``normalize=True``) applies this
    to every predicted map. It changes the probabilities, so calibseg only applies it on request.
    """
    low, high = pred.min(), pred.max()
    if float(high) > float(low):
        return (pred - low) / (high - low)
    return pred


def quantize(pred: Tensor) -> Tensor:
    r"""8-bit levels :math:`q = \lfloor 255\,p \rfloor` (int64, clamped to ``[0, 255]``)."""
    return torch.floor(pred * 255.0).clamp_(0, NUM_THRESHOLDS - 1).long()


def threshold_counts(pred: Tensor, gt: Tensor) -> Tuple[Tensor, Tensor]:
    """Foreground-predicted pixels per threshold, split by the ground truth.

    Args:
        pred: ``(H, W)`` float64 probabilities (validated).
        gt: ``(H, W)`` bool ground truth.

    Returns:
        ``(tp, fp)``, two float64 tensors of shape ``(256,)``: ``tp[k]`` counts the ground-truth
        foreground pixels with :math:`q \\ge k`, ``fp[k]`` the ground-truth background ones.
    """
    levels = quantize(pred)
    counts = []
    for mask in (gt, ~gt):
        hist = torch.bincount(levels[mask], minlength=NUM_THRESHOLDS).to(torch.float64)
        counts.append(hist.flip(0).cumsum(0).flip(0))
    return counts[0], counts[1]
