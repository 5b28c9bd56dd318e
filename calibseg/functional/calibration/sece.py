r"""Differentiable Gaussian-kernel smooth calibration error (SECE) of a batch of pixels, for training.

.. math::
    \hat a(c) = \frac{\sum_j K_h(c - c_j)\,a_j}{\sum_j K_h(c - c_j)},\qquad
    K_h(u) = e^{-u^2 / (2h^2)},\qquad
    \mathrm{SECE} = \frac1N \sum_i |\hat a(c_i) - c_i|

(Nadaraya–Watson regression of correctness on confidence, self term included; calibseg's definition of the
γ-Net paper's Gaussian-kernel surrogate). Gradients flow through the confidences ``c`` (in the kernel weights
and in ``- c_i``); the correctness ``a`` is data.

Two evaluations, both with memory independent of ``N^2``:

* ``'exact'``: the ``O(N^2)`` sums in row blocks of ``<= 2^22`` kernel entries, with a hand-written chunked
  backward (autograd would keep every block); for small ``N``;
* ``'grid'``: masses deposited on ``E >= 100/h`` nodes (linear interpolation, differentiable), one FFT
  convolution, read back by interpolation: ``O(N + E log E)``, relative error ``O((1/(E h))^2) <= 1e-4``.

``'auto'`` picks ``'exact'`` for ``N <= 4096``.
"""
from typing import Tuple

import torch
from torch import Tensor

from calibseg.utils.validation import check_choice, check_positive_float

from .kernel import sece_from_cells

__all__ = ['sece', 'SECE_EXACT_MAX']

SECE_EXACT_MAX = 4096
_BLOCK = 2**22


def _rows(n: int) -> int:
    return max(1, _BLOCK // max(n, 1))


def _kernel_sums(c: Tensor, cols: Tuple[Tensor, ...], h: float) -> Tuple[Tensor, ...]:
    """``Σ_j K_h(c_i - c_j) v_j`` for every column vector ``v`` in ``cols``, in row blocks."""
    n = c.shape[0]
    outs = [torch.empty_like(c) for _ in cols]
    mat = torch.stack(cols, 1)
    step = _rows(n)
    for start in range(0, n, step):
        blk = torch.exp(-0.5 * ((c[start:start + step, None] - c[None, :]) / h) ** 2)
        res = blk @ mat
        for out, col in zip(outs, res.unbind(1)):
            out[start:start + step] = col
    return tuple(outs)


class _ExactSECE(torch.autograd.Function):
    """SECE with the ``O(N^2)`` kernel sums computed in blocks in both passes."""

    @staticmethod
    def forward(ctx, c: Tensor, a: Tensor, h: float) -> Tensor:
        ones = torch.ones_like(c)
        den, num, num_c, den_c = _kernel_sums(c, (ones, a, a * c, c), h)
        a_hat = num / den
        diff = a_hat - c
        ctx.save_for_backward(c, a, den, a_hat, num_c, den_c, torch.sign(diff))
        ctx.h = h
        return diff.abs().mean()

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        c, a, den, a_hat, num_c, den_c, s = ctx.saved_tensors
        h2 = ctx.h * ctx.h
        g = s / den
        g0, g1, q0, q1 = _kernel_sums(c, (g, g * c, g * a_hat, g * a_hat * c), ctx.h)
        # d/dc_m Σ_i s_i â_i = row + column term, with g_i = s_i / D_i and U_m = â_m D_m:
        #   row:    (g_m/h^2) Σ_j K_mj (a_j - â_m)(c_j - c_m) = (g_m/h^2)(Σ_j K_mj a_j c_j - â_m Σ_j K_mj c_j)
        #   column: (1/h^2) Σ_i g_i K_im (a_m - â_i)(c_i - c_m)
        # and -s_m from the -c_m of |â_m - c_m|
        row = g * (num_c - a_hat * den_c)
        col = a * (g1 - c * g0) - (q1 - c * q0)
        grad = (row + col) / h2 - s
        return grad_out * grad / c.shape[0], None, None


def sece(confidences: Tensor, correct: Tensor, *, bandwidth: float = 0.05, method: str = 'auto') -> Tensor:
    """Smooth (Gaussian-kernel Nadaraya–Watson) calibration error of a batch, differentiable in ``confidences``.

    Args:
        confidences: top-label confidences ``c_i`` in ``[0, 1]``, any shape (flattened).
        correct: correctness ``a_i`` (bool, 0/1 or in ``[0, 1]``), same number of elements.
        bandwidth: ``h`` of ``K_h(u) = exp(-u^2 / (2 h^2))``.
        method: ``'exact'``, ``'grid'`` or ``'auto'`` (see the module docstring).

    Returns:
        Scalar tensor, a fraction in ``[0, 1]`` (not percent).

    Example:
        >>> c = torch.tensor([0.9, 0.8, 0.95, 0.6], requires_grad=True)
        >>> loss = sece(c, torch.tensor([1, 0, 1, 1]))
        >>> loss.backward()
    """
    if not isinstance(confidences, Tensor) or not confidences.is_floating_point():
        raise ValueError('confidences must be a floating-point tensor')
    if not isinstance(correct, Tensor) or correct.numel() != confidences.numel():
        shape = tuple(correct.shape) if isinstance(correct, Tensor) else type(correct).__name__
        raise ValueError(f'correct must be a tensor with as many elements as confidences: '
                         f'{tuple(confidences.shape)} vs {shape}')
    check_positive_float('bandwidth', bandwidth)
    check_choice('method', method, ('auto', 'exact', 'grid'))
    c = confidences.reshape(-1)
    a = correct.reshape(-1).to(c.dtype)
    if c.numel() == 0:
        raise ValueError('sece of an empty batch is undefined')
    if not bool(torch.isfinite(c.detach()).all()):
        raise ValueError('confidences contain NaN or inf')
    if method == 'auto':
        method = 'exact' if c.numel() <= SECE_EXACT_MAX else 'grid'
    if method == 'exact':
        return _ExactSECE.apply(c, a, float(bandwidth))
    return sece_from_cells(c, torch.ones_like(c), a, bandwidth=float(bandwidth))
