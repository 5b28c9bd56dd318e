r"""Fused log-softmax stages of the softmax losses, with hand-written backward passes.

One log-softmax per call serves every term of a loss, and the backward pass writes the gradient of all terms in a
few full-size passes instead of autograd's chain of temporaries (a zero-filled gradient for the gather, the
log-softmax backward, one more tensor per extra term, and their sum). Measured on CPU at ``(8, 21, 512, 512)``
(``bench/bench_losses.py``, 1 thread), this brings MbLS, MDCA and ACLS from about 2.1x mmseg's cross-entropy
to about 0.8-1.2x.

:func:`log_softmax_terms` gives, for ``(N, C, M)`` logits ``z`` with ``p = softmax(z)`` over ``C``:

* ``log p_y`` per pixel (every loss),
* optionally the mean ``(1/C) sum_k log p_k`` per pixel (label smoothing),
* optionally the weighted class sums ``sum_{n,m} w_{nm} p_{nkm}`` (MDCA).

Its backward uses, for output gradients ``a`` (of ``log p_y``), ``b`` (of the mean) and ``s`` (of the class sums),

.. math::
    \frac{\partial L}{\partial z_k} = p_k\big(-a - b + w (s_k - \textstyle\sum_j p_j s_j)\big)
        + a\,[k = y] + b / C.

The backward passes are differentiable again (a second backward recomputes them with autograd operations from
the saved logits), so ``gradgradcheck`` holds. Everything runs in the logits' dtype with autocast disabled
(half-precision logits are upcast to float32 by :func:`~calibseg.functional.losses.utils.prepare_pixels`), so
class sums accumulate in float32 under bf16/fp16 autocast. No operation synchronises with the device.

This module imports no OpenMMLab package.
"""
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from .utils import on_device_path

CHUNK_ELEMENTS = 1 << 18
"""Logits per chunk on CPU (``C`` classes times a run of pixels of one image, or several whole small images): 1 MiB
of float32, so that the temporaries of a chunk stay in cache and are reused by the allocator instead of paying a
page-faulted full-size allocation per operation, which on CPU costs about as much as the operation itself. On other
devices (a caching
allocator, kernel launches that cost more than the passes) the whole batch is one chunk."""


def no_autocast(tensor: Tensor):
    """A context that turns autocast off on ``tensor``'s device (the fused stages pick their own dtypes)."""
    return torch.autocast(tensor.device.type, enabled=False)


def pixel_chunks(z: Tensor) -> Iterator[Tuple[slice, slice, slice]]:
    """Index tuples ``(images, :, pixels)`` covering ``(N, C, M)`` logits (and ``(N, 1, M)`` per-pixel tensors),
    about :data:`CHUNK_ELEMENTS` logits each on CPU, everything at once elsewhere."""
    batch, num_classes, size = z.shape
    if on_device_path(z):
        yield slice(None), slice(None), slice(None)
        return
    per_image = max(num_classes * size, 1)
    if per_image <= CHUNK_ELEMENTS:  # small images: several whole images per chunk
        images = CHUNK_ELEMENTS // per_image
        for first in range(0, batch, images):
            yield slice(first, min(first + images, batch)), slice(None), slice(None)
        return
    step = max(1, CHUNK_ELEMENTS // max(num_classes, 1))
    for image in range(batch):
        for start in range(0, size, step):
            yield slice(image, image + 1), slice(None), slice(start, min(start + step, size))


def chunk_log_softmax(zc: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(log_softmax, max, logsumexp)`` over the classes (dim 1) of an ``(n, C, L)`` chunk (keeping dim 1)."""
    log_probs = torch.log_softmax(zc, dim=1)
    z_max = zc.amax(dim=1, keepdim=True)
    # log-sum-exp from the largest entry, where log p is close to 0: accurate also for saturated logits
    return log_probs, z_max, z_max - log_probs.amax(dim=1, keepdim=True)


def chunk_probs(zc: Tensor, lse: Tensor, out: Tensor) -> Tensor:
    """``softmax`` of an ``(n, C, L)`` chunk from its ``(n, 1, L)`` log-sum-exp, written into ``out``."""
    return torch.sub(zc, lse, out=out).exp_()


def per_pixel(z: Tensor, count: int) -> Tuple[Tensor, ...]:
    """``count`` uninitialised ``(N, 1, M)`` tensors like ``z`` (indexable with :func:`pixel_chunks`' tuples)."""
    batch, _, size = z.shape
    return tuple(z.new_empty(batch, 1, size) for _ in range(count))


def optional_grad(grad: Optional[Tensor], like: Tensor) -> Tensor:
    """An output's gradient as ``(N, 1, M)``, zeros (broadcast, not allocated) when autograd passed ``None``."""
    return (grad.unsqueeze(1) if grad is not None else like.new_zeros(())).expand_as(like)


class _LogSoftmaxTerms(torch.autograd.Function):

    @staticmethod
    def forward(ctx, z: Tensor, target: Tensor, with_mean: bool, prob_weight: Optional[Tensor]):
        ctx.set_materialize_grads(False)
        log_p_y, lse, mean = per_pixel(z, 3)
        index = target.unsqueeze(1)
        weight = prob_weight.unsqueeze(1) if prob_weight is not None else None
        prob_sum = z.new_zeros(z.shape[1]) if prob_weight is not None else None
        with no_autocast(z):
            for chunk in pixel_chunks(z):
                log_probs, _, lse[chunk] = chunk_log_softmax(z[chunk])
                log_p_y[chunk] = log_probs.gather(1, index[chunk])
                if with_mean:
                    mean[chunk] = log_probs.mean(dim=1, keepdim=True)
                if weight is not None:
                    prob_sum += log_probs.exp_().mul_(weight[chunk]).sum(dim=(0, 2))
        ctx.save_for_backward(z, target, lse, prob_weight)
        return log_p_y.squeeze(1), mean.squeeze(1) if with_mean else None, prob_sum

    @staticmethod
    def backward(ctx, grad_log_p_y: Optional[Tensor], grad_mean: Optional[Tensor],
                 grad_prob_sum: Optional[Tensor]):
        z, target, lse, prob_weight = ctx.saved_tensors
        with no_autocast(z):
            if torch.is_grad_enabled():  # double backward: the same formula with differentiable operations
                return _terms_backward(torch.softmax(z, dim=1), target, grad_log_p_y, grad_mean, grad_prob_sum,
                                       prob_weight), None, None, None
            num_classes = z.shape[1]
            a = optional_grad(grad_log_p_y, lse)
            coef = -a if grad_mean is None else -(a + grad_mean.unsqueeze(1))
            offset = None if grad_mean is None else grad_mean.unsqueeze(1) / num_classes
            with_sums = grad_prob_sum is not None and prob_weight is not None
            if with_sums:
                weight = prob_weight.unsqueeze(1)
                sums = grad_prob_sum.view(1, num_classes, 1)
            index = target.unsqueeze(1)
            grad = torch.empty_like(z, memory_format=torch.contiguous_format)
            for chunk in pixel_chunks(z):
                gc = chunk_probs(z[chunk], lse[chunk], grad[chunk])
                if with_sums:
                    weight_c = weight[chunk]
                    coef_c = coef[chunk] - weight_c * (gc * sums).sum(dim=1, keepdim=True)
                    gc.mul_(torch.addcmul(coef_c, sums, weight_c))
                    if offset is not None:
                        gc.add_(offset[chunk])
                elif offset is not None:
                    torch.addcmul(offset[chunk], gc, coef[chunk], out=gc)
                else:
                    gc.mul_(coef[chunk])
                if grad_log_p_y is not None:
                    gc.scatter_add_(1, index[chunk], a[chunk])
        return grad, None, None, None


def _terms_backward(probs: Tensor, target: Tensor, grad_a: Optional[Tensor], grad_b: Optional[Tensor],
                    grad_s: Optional[Tensor], weight: Optional[Tensor]) -> Tensor:
    """``p * (-a - b + w (s - <p, s>)) + a [k = y] + b / C`` with differentiable operations (double backward)."""
    batch, num_classes, size = probs.shape
    coef = probs.new_zeros(batch, size)
    if grad_a is not None:
        coef = coef - grad_a
    if grad_b is not None:
        coef = coef - grad_b
    if grad_s is not None and weight is not None:
        coef = coef - weight * torch.einsum('nkm,k->nm', probs, grad_s)
        grad = torch.addcmul(coef.unsqueeze(1), weight.unsqueeze(1), grad_s.view(1, num_classes, 1)) * probs
    else:
        grad = probs * coef.unsqueeze(1)
    if grad_b is not None:
        grad = grad + (grad_b / num_classes).unsqueeze(1)
    if grad_a is not None:
        grad = grad.scatter_add(1, target.unsqueeze(1), grad_a.unsqueeze(1))
    return grad


def log_softmax_terms(z: Tensor, target: Tensor, *, with_mean: bool = False,
                      prob_weight: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """``(log p_y, mean_k log p_k, sum_{n,m} w p)`` of ``(N, C, M)`` logits and ``(N, M)`` labels in ``[0, C)``.

    Args:
        z: ``(N, C, M)`` floating logits.
        target: ``(N, M)`` int64 labels in ``[0, C)`` (ignored pixels must hold a valid class, e.g. 0).
        with_mean: also return the per-pixel mean of the log-probabilities (else ``None``).
        prob_weight: ``(N, M)`` pixel weights ``w``; if given, also return the ``(C,)`` weighted sums of the
            probabilities (else ``None``).

    Returns:
        ``(log_p_y (N, M), mean (N, M) or None, prob_sum (C,) or None)``, differentiable w.r.t. ``z`` (twice).

    Example:
        >>> z = torch.tensor([[[2.0], [0.0]]])
        >>> log_p_y, _, _ = log_softmax_terms(z, torch.tensor([[0]]))
        >>> torch.allclose(log_p_y, torch.log_softmax(z, 1)[:, 0])
        True
    """
    return _LogSoftmaxTerms.apply(z, target, with_mean, prob_weight)
