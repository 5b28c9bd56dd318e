r"""Fused log-softmax stages of the softmax losses, with hand-written backward passes.

One log-softmax per call serves every term of a loss, and the backward pass writes the gradient of all terms in a
few full-size passes instead of autograd's chain of temporaries (a zero-filled gradient for the gather, the
log-softmax backward, one more tensor per extra term, and their sum). Measured on CPU at ``(8, 21, 512, 512)``
(``bench/bench_losses.py``), this brings MbLS, MDCA and ACLS from about 2.1x mmseg's cross-entropy to about 1.1-1.3x.

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

CHUNK_ELEMENTS = 1 << 18
"""Logits per chunk (``C`` classes times a run of pixels of one image): 1 MiB of float32, so that the temporaries
of a chunk stay in the CPU's cache (and the caching allocator reuses them) instead of paying a page-faulted
full-size allocation per operation, which on CPU costs as much as the operation itself."""


def no_autocast(tensor: Tensor):
    """A context that turns autocast off on ``tensor``'s device (the fused stages pick their own dtypes)."""
    return torch.autocast(tensor.device.type, enabled=False)


def pixel_chunks(z: Tensor) -> Iterator[Tuple[int, slice]]:
    """``(image, pixel slice)`` runs covering ``(N, C, M)`` logits, about :data:`CHUNK_ELEMENTS` logits each."""
    batch, num_classes, size = z.shape
    step = max(1, CHUNK_ELEMENTS // max(num_classes, 1))
    for image in range(batch):
        for start in range(0, size, step):
            yield image, slice(start, min(start + step, size))


def chunk_log_softmax(zc: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``(log_softmax, max, logsumexp)`` over the classes (dim 0) of a ``(C, L)`` chunk."""
    log_probs = torch.log_softmax(zc, dim=0)
    z_max = zc.amax(dim=0)
    # log-sum-exp from the largest entry, where log p is close to 0: accurate also for saturated logits
    return log_probs, z_max, z_max - log_probs.amax(dim=0)


def chunk_probs(zc: Tensor, lse: Tensor, out: Tensor) -> Tensor:
    """``softmax`` of a ``(C, L)`` chunk from its log-sum-exp, written into ``out``."""
    return torch.sub(zc, lse, out=out).exp_()


class _LogSoftmaxTerms(torch.autograd.Function):

    @staticmethod
    def forward(ctx, z: Tensor, target: Tensor, with_mean: bool, prob_weight: Optional[Tensor]):
        ctx.set_materialize_grads(False)
        batch, num_classes, size = z.shape
        log_p_y = z.new_empty(batch, size)
        lse = z.new_empty(batch, size)
        mean = z.new_empty(batch, size) if with_mean else None
        prob_sum = z.new_zeros(num_classes) if prob_weight is not None else None
        with no_autocast(z):
            for image, pixels in pixel_chunks(z):
                log_probs, _, lse[image, pixels] = chunk_log_softmax(z[image, :, pixels])
                log_p_y[image, pixels] = log_probs.gather(0, target[image, pixels].unsqueeze(0)).squeeze(0)
                if mean is not None:
                    mean[image, pixels] = log_probs.mean(dim=0)
                if prob_sum is not None:
                    prob_sum += log_probs.exp_() @ prob_weight[image, pixels]
        ctx.save_for_backward(z, target, lse, prob_weight)
        return log_p_y, mean, prob_sum

    @staticmethod
    def backward(ctx, grad_log_p_y: Optional[Tensor], grad_mean: Optional[Tensor],
                 grad_prob_sum: Optional[Tensor]):
        z, target, lse, prob_weight = ctx.saved_tensors
        with no_autocast(z):
            if torch.is_grad_enabled():  # double backward: the same formula with differentiable operations
                return _terms_backward(torch.softmax(z, dim=1), target, grad_log_p_y, grad_mean, grad_prob_sum,
                                       prob_weight), None, None, None
            num_classes = z.shape[1]
            coef = z.new_zeros(lse.shape)
            if grad_log_p_y is not None:
                coef -= grad_log_p_y
            if grad_mean is not None:
                coef -= grad_mean
            offset = None if grad_mean is None else grad_mean / num_classes
            with_sums = grad_prob_sum is not None and prob_weight is not None
            grad = torch.empty_like(z, memory_format=torch.contiguous_format)
            for image, pixels in pixel_chunks(z):
                gc = chunk_probs(z[image, :, pixels], lse[image, pixels], grad[image, :, pixels])
                coef_c = coef[image, pixels]
                if with_sums:
                    weight_c = prob_weight[image, pixels]
                    coef_c = coef_c - weight_c * (grad_prob_sum @ gc)
                    gc.mul_(torch.addcmul(coef_c, grad_prob_sum.unsqueeze(1), weight_c))
                    if offset is not None:
                        gc.add_(offset[image, pixels])
                elif offset is not None:
                    torch.addcmul(offset[image, pixels], gc, coef_c, out=gc)
                else:
                    gc.mul_(coef_c)
                if grad_log_p_y is not None:
                    gc.scatter_add_(0, target[image, pixels].unsqueeze(0), grad_log_p_y[image, pixels].unsqueeze(0))
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
