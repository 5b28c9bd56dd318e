"""Label neighbourhoods for the spatially aware losses (SVLS, NACL): kernels, borders, ignored labels.

Both losses look at the labels in a ``k x k`` window around every pixel, weighted by a kernel ``w``.
The rules, shared by both so that they cannot drift apart:

* **Ignored neighbours** (label ``ignore_index``) are excluded and the kernel is renormalised over the
  remaining ones, so ignored regions never leak into a target.
* **Image borders**: ``border='renormalise'`` (default) treats out-of-image neighbours exactly like
  ignored ones (excluded, kernel renormalised over the in-image neighbours), so a border pixel's
  target only uses labels that exist. ``border='replicate'`` instead repeats the edge labels outwards,
  as the public SVLS code pads its label maps. Neither counts them as class 0 (the NACL code's zero
  padding of the label map does).
* **Ignored centre pixels** get no loss (the losses mask them in the reduction).

For a pixel ``x`` with neighbour offsets ``d`` (``k*k`` of them) this gives weights
``a_d(x) = w_d v(x+d) / sum_e w_e v(x+e)`` with ``v`` = 1 for valid in-image labels, so that the
class proportions are ``tau_c(x) = sum_d a_d(x) [y(x+d) = c]``. The centre weight is positive for
every kernel here, so a valid centre pixel always has a positive denominator.

The weights are kept per offset, ``(N, k*k, H, W)``, next to the neighbours' labels: a loss can then
gather its log-probabilities at ``k*k`` labels per pixel (a gather of ``k*k`` values instead of a
``C``-channel convolution of the one-hot map), or scatter the weights into dense ``(N, C, H, W)``
proportions when it needs every class. Only a Python loop over the ``k*k`` offsets, none over pixels.

This module imports no OpenMMLab package.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from calibseg.utils.validation import check_choice, check_positive_float, check_positive_int

KERNELS = ('mean', 'gaussian', 'svls')
BORDERS = ('renormalise', 'replicate')


def check_kernel_size(kernel_size, *, minimum: int = 1) -> int:
    """Return ``kernel_size`` if it is an odd integer ``>= minimum``, else raise ``ValueError``."""
    size = check_positive_int('kernel_size', kernel_size, minimum=minimum)
    if size % 2 == 0:
        raise ValueError(f'kernel_size must be odd (a window centred on the pixel), got {kernel_size!r}')
    return size


def neighbourhood_kernel(kind: str, kernel_size: int, sigma: float = 1.0, *,
                         dtype: torch.dtype = torch.float64) -> Tensor:
    r"""The ``(k, k)`` kernel ``w``, normalised to sum 1.

    * ``'mean'``: ``w = 1 / k^2``.
    * ``'gaussian'``: ``w_{ij} \propto \exp(-(i^2 + j^2) / (2\sigma^2))`` for offsets ``i, j`` in
      ``[-k//2, k//2]``.
    * ``'svls'``: the Gaussian with its centre weight replaced by the sum of the other weights, then
      normalised (the centre keeps 1/2); Islam & Glocker, IPMI 2021. Needs ``k >= 3``.

    Example:
        >>> neighbourhood_kernel('svls', 3, 1.0)[1, 1].item()
        0.5
    """
    check_choice('kernel', kind, KERNELS)
    kernel_size = check_kernel_size(kernel_size, minimum=3 if kind == 'svls' else 1)
    if kind == 'mean':
        return torch.full((kernel_size, kernel_size), 1.0 / kernel_size ** 2, dtype=dtype)
    sigma = check_positive_float('sigma', sigma)
    offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    kernel = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma ** 2))
    if kind == 'svls':
        centre = kernel_size // 2
        kernel[centre, centre] = 0.0
        kernel[centre, centre] = kernel.sum()
    return (kernel / kernel.sum()).to(dtype)


class Neighbourhood(NamedTuple):
    """Labels and renormalised weights of every pixel's ``k*k`` neighbours.

    Attributes:
        labels: ``(N, k*k, H, W)`` int64 labels of the neighbours; 0 where excluded (so that they can be
            gathered safely; their weight is 0).
        weights: ``(N, k*k, H, W)`` ``a_d(x)``: 0 for excluded neighbours, summing to 1 over ``d`` at
            every valid pixel (all 0 at ignored pixels whose neighbours are all excluded).
    """

    labels: Tensor
    weights: Tensor

    def proportions(self, num_classes: int) -> Tensor:
        """Dense class proportions ``tau``: ``(N, C, H, W)``, ``tau_c(x) = sum_d a_d(x) [y(x+d) = c]``."""
        batch, _, height, width = self.labels.shape
        tau = self.weights.new_zeros(batch, num_classes, height, width)
        return tau.scatter_add_(1, self.labels, self.weights)


def label_neighbourhood(target: Tensor, valid: Tensor, kernel: Tensor, *,
                        border: str = 'renormalise') -> Neighbourhood:
    """The neighbours of every pixel of ``(N, H, W)`` labels under the rules of the module docstring.

    Args:
        target: ``(N, H, W)`` integer labels (any value at ignored pixels).
        valid: ``(N, H, W)`` bool mask of the non-ignored pixels.
        kernel: ``(k, k)`` non-negative kernel with a positive centre, ``k`` odd (see
            :func:`neighbourhood_kernel`); cast to the dtype of the returned weights.
        border: ``'renormalise'`` or ``'replicate'``.

    Returns:
        :class:`Neighbourhood` with weights in ``kernel.dtype``.

    Example:
        >>> target = torch.tensor([[[0, 1]]])
        >>> hood = label_neighbourhood(target, target >= 0, neighbourhood_kernel('mean', 3))
        >>> hood.proportions(2)[0, :, 0, 0].tolist()  # the left pixel: itself and its right neighbour
        [0.5, 0.5]
    """
    check_choice('border', border, BORDERS)
    size = kernel.shape[-1]
    pad = size // 2
    # -1 marks excluded neighbours (ignored, or outside the image for 'renormalise').
    marked = torch.where(valid, target.long(), target.new_full((), -1, dtype=torch.long))
    height, width = target.shape[-2:]
    if border == 'replicate':
        # the nearest in-image row and column of every padded position (exact for any label value)
        rows = torch.arange(-pad, height + pad, device=target.device).clamp_(0, max(height - 1, 0))
        cols = torch.arange(-pad, width + pad, device=target.device).clamp_(0, max(width - 1, 0))
        padded = marked[:, rows[:, None], cols[None, :]] if marked.numel() else \
            marked.new_full((marked.shape[0], height + 2 * pad, width + 2 * pad), -1)
    else:
        padded = F.pad(marked, (pad,) * 4, value=-1)
    labels = torch.stack([padded[:, i:i + height, j:j + width]
                          for i in range(size) for j in range(size)], dim=1)
    included = labels >= 0
    flat_kernel = kernel.reshape(1, -1, 1, 1)
    weights = included * flat_kernel
    total = weights.sum(dim=1, keepdim=True)
    weights = weights / torch.where(total > 0, total, torch.ones_like(total))
    return Neighbourhood(labels.clamp_min_(0), weights)
