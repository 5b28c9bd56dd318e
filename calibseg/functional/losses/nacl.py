"""Neighbor-aware calibration loss, NACL (Murugesan et al., MICCAI 2023 / MedIA 2024)."""
from typing import Dict, Optional, Union

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from calibseg.utils.validation import check_choice, check_non_negative, check_positive_float

from .fused import chunk_log_softmax, chunk_probs, no_autocast
from .neighbourhood import BORDERS, LabelWindows, block_windows, check_kernel_size, label_windows, row_chunks
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


def _block_proportions(windows: LabelWindows, images: slice, rows: slice, like: Tensor) -> Tensor:
    """``tau`` of one block: the ``k*k`` neighbours' weights ``a_d`` scattered into a zero block shaped ``like``."""
    index, share = block_windows(windows, images, rows)
    return torch.zeros_like(like, memory_format=torch.contiguous_format).scatter_add_(1, index, share)


class _NACLTerms(torch.autograd.Function):
    """Per-pixel ``-log p_y`` and ``sum_k |tau_k - z_k|`` (or ``sum_k (tau_k - z_k)^2``), fused: two ``(N, H, W)``.

    Block by block (:func:`~calibseg.functional.losses.neighbourhood.row_chunks`): one log-softmax and the
    block's proportions ``tau`` (``k*k`` scatters into a cache-sized zero block), keeping only the per-pixel
    log-sum-exp and, for ``l1``, the sign of ``z - tau`` as int8 (a quarter of the logits' bytes: rebuilding
    ``tau`` costs more than reading it back); the backward pass writes ``g_ce (p - e_y) + g_pen sign(z - tau)``
    into the one full-size gradient (for ``l2`` it rebuilds ``tau`` of each block and adds ``2 g_pen (z - tau)``).
    No full-size float ``tau``, log-probabilities or sign are stored: the previous version (all three) cost about
    2x mmseg's cross-entropy on CPU at ``(8, 21, 512, 512)``. First derivatives only.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, target: Tensor, windows: LabelWindows, squared: bool):
        batch, _, height, width = logits.shape
        nll, penalty, lse = (logits.new_empty(batch, 1, height, width) for _ in range(3))
        index = target.unsqueeze(1)
        sign = None if squared else torch.empty(logits.shape, dtype=torch.int8, device=logits.device)
        with no_autocast(logits):
            for images, rows in row_chunks(logits):
                block = (images, slice(None), rows)
                zc = logits[block]
                log_probs, _, lse[block] = chunk_log_softmax(zc)
                torch.neg(log_probs.gather(1, index[block]), out=nll[block])
                gap = torch.sub(zc, _block_proportions(windows, images, rows, zc), out=log_probs)
                if squared:
                    penalty[block] = gap.square_().sum(dim=1, keepdim=True)
                else:
                    slope = torch.sign(gap)
                    sign[block] = slope
                    penalty[block] = gap.mul_(slope).sum(dim=1, keepdim=True)
        ctx.windows, ctx.squared = windows, squared
        ctx.save_for_backward(logits, target, lse, sign)
        return nll.squeeze(1), penalty.squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll: Tensor, grad_penalty: Tensor):
        logits, target, lse, sign = ctx.saved_tensors
        windows = ctx.windows
        index = target.unsqueeze(1)
        g_nll, g_pen = grad_nll.unsqueeze(1), grad_penalty.unsqueeze(1)
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        with no_autocast(logits):
            for images, rows in row_chunks(logits):
                block = (images, slice(None), rows)
                zc, a, b = logits[block], g_nll[block], g_pen[block]
                gc = chunk_probs(zc, lse[block], grad[block]).mul_(a)
                gc.scatter_add_(1, index[block], -a)
                if ctx.squared:
                    tau = _block_proportions(windows, images, rows, zc)
                    gc.addcmul_(torch.sub(zc, tau, out=tau), b, value=2.0)
                else:
                    gc.addcmul_(sign[block], b)
        return grad, None, None, None


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
    windows = label_windows(labels, pixels.valid.reshape(target.shape), kernel=options['kernel'],
                            kernel_size=options['kernel_size'], sigma=options['sigma'], border=options['border'],
                            dtype=logits.dtype)
    nll, penalty = _NACLTerms.apply(logits, labels, windows, options['distance'] == 'l2')
    nll, penalty = nll.reshape(pixels.valid.shape), penalty.reshape(pixels.valid.shape)
    weights = target_class_weight(class_weight, pixels)
    nll = nll if weights is None else nll * weights
    loss = nll + (options['alpha'] / pixels.num_classes) * penalty
    return reduce_loss(loss, pixels, reduction=reduction, avg_factor=avg_factor)
