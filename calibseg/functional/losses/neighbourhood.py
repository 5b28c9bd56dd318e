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

For a pixel ``x`` with neighbour offsets ``d`` this gives the class proportions
``tau_c(x) = sum_d w_d v(x+d) [y(x+d) = c] / sum_d w_d v(x+d)`` with ``v`` = 1 for valid in-image labels.
The centre weight is positive for every kernel here, so a valid centre pixel always has a positive
denominator.

Computation: :func:`label_neighbourhood` builds the full ``(N, C, H, W)`` counts (the one-hot map, zeros at
excluded pixels, filtered by the kernel, written as ``k*k`` scatters of one weighted value per pixel into a zero
map). The losses never build it: :func:`label_windows` keeps the padded label map, the padded validity mask and
``1 / total`` (all per pixel, ``1/C`` of the logits' size), and the losses visit the logits in cache-sized blocks
of whole rows (:func:`row_chunks`, the same budget as :mod:`~calibseg.functional.losses.fused`) where
:func:`block_windows` gives, for the ``k*k`` offsets at once, the neighbours' labels and normalised weights
``a_d = w_d v(x+d) / total`` of the block, which the losses gather from or scatter into the block's
log-probabilities and gradient in one call each. Only a Python loop over blocks, none over pixels.

This module imports no OpenMMLab package.
"""
import math
from typing import Iterator, List, NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from calibseg.utils.validation import check_choice, check_positive_float, check_positive_int

from . import fused
from .utils import on_device_path

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
    return torch.tensor(kernel_weights(kind, kernel_size, sigma), dtype=torch.float64).to(dtype)


def kernel_weights(kind: str, kernel_size: int, sigma: float = 1.0) -> List[List[float]]:
    """The kernel of :func:`neighbourhood_kernel` as nested Python lists (computed without tensors, so that the
    losses read nothing back from a device)."""
    check_choice('kernel', kind, KERNELS)
    kernel_size = check_kernel_size(kernel_size, minimum=3 if kind == 'svls' else 1)
    if kind == 'mean':
        return [[1.0 / kernel_size ** 2] * kernel_size for _ in range(kernel_size)]
    sigma = check_positive_float('sigma', sigma)
    half = kernel_size // 2
    kernel = [[math.exp(-(i * i + j * j) / (2 * sigma ** 2)) for j in range(-half, half + 1)]
              for i in range(-half, half + 1)]
    if kind == 'svls':
        kernel[half][half] = 0.0
        kernel[half][half] = math.fsum(map(math.fsum, kernel))
    total = math.fsum(map(math.fsum, kernel))
    return [[value / total for value in row] for row in kernel]


class Neighbourhood(NamedTuple):
    """Kernel-weighted class counts of every pixel's neighbourhood and their total.

    Attributes:
        counts: ``(N, C, H, W)`` ``sum_d w_d v(x+d) [y(x+d) = c]``.
        total: ``(N, 1, H, W)`` ``sum_d w_d v(x+d)``; 0 where no neighbour is valid (the counts are 0 there).
    """

    counts: Tensor
    total: Tensor

    def safe_total(self) -> Tensor:
        """``total`` with 1 where it is 0, so that ``counts / safe_total()`` is always finite."""
        return torch.where(self.total > 0, self.total, torch.ones((), dtype=self.total.dtype,
                                                                   device=self.total.device))

    def proportions(self) -> Tensor:
        """Class proportions ``tau``: ``(N, C, H, W)``, summing to 1 where a neighbour is valid, else 0."""
        return self.counts / self.safe_total()


def _padded_labels(target: Tensor, valid: Tensor, pad: int, border: str, dtype: torch.dtype
                   ) -> Tuple[Tensor, Tensor]:
    """``(N, 1, H + 2p, W + 2p)`` int64 labels (0 where excluded) and validity ``v`` in ``dtype``: replicated edge
    labels with ``border='replicate'``, else zeros outside the image (excluded like ignored pixels)."""
    height, width = target.shape[-2:]
    index = torch.where(valid, target.long(), torch.zeros((), dtype=torch.long, device=target.device))
    present = valid.to(dtype)
    if border == 'replicate' and target.numel():
        # the nearest in-image row and column of every padded position
        rows = torch.arange(-pad, height + pad, device=target.device).clamp_(0, height - 1)
        cols = torch.arange(-pad, width + pad, device=target.device).clamp_(0, width - 1)
        index = index[:, rows[:, None], cols[None, :]]
        present = present[:, rows[:, None], cols[None, :]]
    else:
        index = F.pad(index, (pad,) * 4)
        present = F.pad(present, (pad,) * 4)
    return index.unsqueeze(1), present.unsqueeze(1)


def label_neighbourhood(target: Tensor, valid: Tensor, num_classes: int, *, kernel: str, kernel_size: int,
                        sigma: float = 1.0, border: str = 'renormalise',
                        dtype: torch.dtype = torch.float32) -> Neighbourhood:
    """Class counts of every pixel's neighbourhood under the rules of the module docstring.

    Args:
        target: ``(N, H, W)`` integer labels in ``[0, num_classes)`` at valid pixels (any value elsewhere).
        valid: ``(N, H, W)`` bool mask of the non-ignored pixels.
        num_classes: ``C``.
        kernel, kernel_size, sigma: see :func:`neighbourhood_kernel`.
        border: ``'renormalise'`` or ``'replicate'``.
        dtype: floating dtype of the result.

    Returns:
        :class:`Neighbourhood`.

    Example:
        >>> target = torch.tensor([[[0, 1]]])
        >>> hood = label_neighbourhood(target, target >= 0, 2, kernel='mean', kernel_size=3)
        >>> hood.proportions()[0, :, 0, 0].tolist()  # the left pixel: itself and its right neighbour
        [0.5, 0.5]
    """
    check_choice('border', border, BORDERS)
    weights = kernel_weights(kernel, kernel_size, sigma)
    batch, height, width = target.shape
    index, present = _padded_labels(target, valid, kernel_size // 2, border, dtype)
    counts = present.new_zeros(batch, num_classes, height, width)
    total = present.new_zeros(batch, 1, height, width)
    for i in range(kernel_size):
        for j in range(kernel_size):
            weighted = present[:, :, i:i + height, j:j + width] * weights[i][j]
            counts.scatter_add_(1, index[:, :, i:i + height, j:j + width], weighted)
            total.add_(weighted)
    return Neighbourhood(counts, total)


class LabelWindows(NamedTuple):
    """The padded label map of a batch, for visiting every pixel's ``k x k`` window block by block.

    Attributes:
        index: ``(N, 1, H + 2p, W + 2p)`` int64 labels (``p = k // 2``), 0 where excluded.
        present: ``(N, 1, H + 2p, W + 2p)`` ``v``: 1 at valid in-image (or replicated) labels, else 0.
        kernel: the ``k x k`` kernel ``w`` flattened to ``(k*k,)`` (row-major offsets).
        inv_total: ``(N, 1, H, W)`` ``1 / sum_d w_d v(x+d)``, 0 where no neighbour is valid.
    """

    index: Tensor
    present: Tensor
    kernel: Tensor
    inv_total: Tensor

    @property
    def kernel_size(self) -> int:
        return math.isqrt(self.kernel.numel())


def label_windows(target: Tensor, valid: Tensor, *, kernel: str, kernel_size: int, sigma: float = 1.0,
                  border: str = 'renormalise', dtype: torch.dtype = torch.float32) -> LabelWindows:
    """The padded labels, validity and ``1 / total`` of :class:`LabelWindows` (rules of the module docstring).

    Args:
        target: ``(N, H, W)`` integer labels (any value at invalid pixels).
        valid: ``(N, H, W)`` bool mask of the non-ignored pixels.
        kernel, kernel_size, sigma: see :func:`neighbourhood_kernel`.
        border: ``'renormalise'`` or ``'replicate'``.
        dtype: floating dtype of ``present`` and ``inv_total``.

    Example:
        >>> windows = label_windows(torch.tensor([[[0, 1]]]), torch.tensor([[[True, True]]]), kernel='mean',
        ...                         kernel_size=3)
        >>> windows.index.shape, windows.inv_total.flatten().tolist()  # each pixel has 2 in-image neighbours
        (torch.Size([1, 1, 3, 4]), [4.5, 4.5])
    """
    check_choice('border', border, BORDERS)
    weights = kernel_weights(kernel, kernel_size, sigma)
    _, height, width = target.shape
    index, present = _padded_labels(target, valid, kernel_size // 2, border, dtype)
    total = present.new_zeros(target.shape[0], 1, height, width)
    for i in range(kernel_size):
        for j in range(kernel_size):
            total.add_(present[:, :, i:i + height, j:j + width], alpha=weights[i][j])
    inv_total = torch.where(total > 0, total.reciprocal(), torch.zeros((), dtype=dtype, device=total.device))
    flat = [value for row in weights for value in row]
    if on_device_path(target):  # one fill per weight: a blocking host-to-device copy would synchronise
        kernel = torch.empty(len(flat), dtype=dtype, device=target.device)
        for position, value in enumerate(flat):
            kernel[position] = value
    else:
        kernel = torch.tensor(flat, dtype=dtype)
    return LabelWindows(index, present, kernel, inv_total)


def row_chunks(logits: Tensor) -> Iterator[Tuple[slice, slice]]:
    """``(images, rows)`` slices covering ``(N, C, H, W)`` logits: blocks of whole rows of about
    :data:`~calibseg.functional.losses.fused.CHUNK_ELEMENTS` logits (several whole small images, or runs of rows of
    one image) on CPU, everything at once on the device path."""
    batch, num_classes, height, width = logits.shape
    if on_device_path(logits):
        yield slice(None), slice(0, height)
        return
    per_image = max(num_classes * height * width, 1)
    if per_image <= fused.CHUNK_ELEMENTS:
        images = fused.CHUNK_ELEMENTS // per_image
        for first in range(0, batch, images):
            yield slice(first, min(first + images, batch)), slice(0, height)
        return
    step = max(1, fused.CHUNK_ELEMENTS // max(num_classes * width, 1))
    for image in range(batch):
        for start in range(0, height, step):
            yield slice(image, image + 1), slice(start, min(start + step, height))


def block_windows(windows: LabelWindows, images: slice, rows: slice) -> Tuple[Tensor, Tensor]:
    """The ``k*k`` neighbours of every pixel of the block ``(images, rows)``: ``(n, k*k, R, W)`` labels
    ``y(x+d)`` (int64) and normalised weights ``a_d(x) = w_d v(x+d) / total(x)`` (0 where no neighbour is valid).

    Two unfolds of the block's padded band of rows (views) and one copy of each; the losses gather from or
    scatter into the block's ``C`` classes with them in one call.
    """
    size = windows.kernel_size
    height = windows.inv_total.shape[2]
    rows = slice(*rows.indices(height))
    inv_total = windows.inv_total[images, :, rows]
    count, _, block_rows, width = inv_total.shape
    band = (images, 0, slice(rows.start, rows.stop + size - 1))
    shape = (count, size * size, block_rows, width)
    index = windows.index[band].unfold(1, block_rows, 1).unfold(2, width, 1).reshape(shape)
    present = windows.present[band].unfold(1, block_rows, 1).unfold(2, width, 1)
    share = present.new_empty(shape)  # written once by the product (no separate copy of the unfolded view)
    torch.mul(present, windows.kernel.view(1, size, size, 1, 1), out=share.view(present.shape))
    return index, share.mul_(inv_total)
