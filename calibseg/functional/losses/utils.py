"""Shared stages of the softmax calibration losses: checks, pixel layout, weighting, reduction.

Every loss in :mod:`calibseg.functional.losses` runs the same pipeline, so the stages live here and
the losses cannot drift apart:

1. :func:`check_reduction` and the ``check_*`` helpers validate options (the registered modules call
   the same helpers at construction, so a bad config fails before training starts);
2. :func:`prepare_pixels` validates logits and labels and returns ``(N, C, M)`` logits (``M`` pixels
   per image; half precision upcast to float32), ``(N, M)`` labels and the mask of non-ignored
   pixels;
3. each loss computes an ``(N, M)`` per-pixel loss (and, for MDCA, a batch term);
4. :func:`reduce_loss` zeroes the ignored pixels, applies the per-pixel ``weight`` and reduces.

Ignored pixels are *masked*, not removed: every statistic is taken over the non-ignored pixels only,
exactly as if they had been removed, but the logits keep their ``(N, C, H, W)`` layout. Removing
them (boolean indexing into a channels-last copy, and its backward) costs more than the loss
itself: measured on CPU at ``(2, 21, 256, 256)``, the flatten-and-index versions of these losses ran
5-8x slower than cross-entropy, the masked ones 0.9-2x. :func:`flatten_pixels` still offers the
``(P, C)`` / ``(P,)`` rows for code that wants them. Logits at ignored pixels must be finite (as
for PyTorch's and mmseg's cross-entropy, whose gradients they would also poison).

**No host-device synchronisation on accelerators.** On CPU the value checks (labels in range, finite logits,
non-negative class weights) raise :class:`ValueError` with the offending values, which costs nothing there. On
any other device (CUDA) reading a value back would stall the pipeline on every training step, so the losses take
the *device path*: the label and logit checks become asynchronous device assertions
(``torch._assert_async``: a bad batch fails at the next synchronisation with a ``RuntimeError`` naming the
problem, not the values), the pixel count stays a tensor, and no Python branch depends on a tensor's value.
``set_sync_checks(True)`` restores the readable, synchronising checks on every device (for debugging).

This module imports no OpenMMLab package.
"""
import math
from typing import Callable, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from calibseg.utils.validation import check_choice, check_int, check_labels

REDUCTIONS = ('none', 'mean', 'sum')

ClassWeight = Optional[Union[Sequence[float], Tensor]]
"""Type of ``class_weight``: ``None`` or one non-negative weight per class."""

_HALF_DTYPES = (torch.float16, torch.bfloat16)

_SYNC_CHECKS = False  # set_sync_checks(True): readable (synchronising) value checks on every device
_FORCE_DEVICE_PATH = False  # tests: take the accelerator's code path on CPU tensors


def set_sync_checks(enabled: bool) -> bool:
    """Check label and logit values with readable, synchronising errors on every device (a debug option).

    Off by default: on accelerators the losses then check values with asynchronous device assertions (see the
    module docstring). Returns the previous setting.
    """
    global _SYNC_CHECKS
    previous, _SYNC_CHECKS = _SYNC_CHECKS, bool(enabled)
    return previous


def on_device_path(tensor: Tensor) -> bool:
    """Whether the losses avoid every host-device synchronisation for ``tensor`` (any device but the CPU)."""
    return tensor.device.type != 'cpu' or _FORCE_DEVICE_PATH


def defer_value_checks(tensor: Tensor) -> bool:
    """Whether value checks on ``tensor`` are asynchronous device assertions (device path, no sync checks)."""
    return on_device_path(tensor) and not _SYNC_CHECKS


# -------------------------------------------------------------------------------------------------
# Option checks (shared with the registered modules; the generic ones live in calibseg.utils.validation)
# -------------------------------------------------------------------------------------------------
def check_ignore_index(ignore_index) -> int:
    """Return ``ignore_index`` if it is an ``int`` (any value: a label value, not a position)."""
    return check_int('ignore_index', ignore_index)


def check_reduction(reduction, avg_factor=None) -> str:
    """Validate ``reduction`` and its combination with ``avg_factor``.

    ``avg_factor`` replaces the number of non-ignored pixels as the denominator of ``'mean'``;
    combined with ``'sum'`` or ``'none'`` it would be silently meaningless, so it raises
    ``ValueError``.
    """
    check_choice('reduction', reduction, REDUCTIONS)
    if avg_factor is not None and reduction != 'mean':
        raise ValueError("avg_factor is only defined for reduction='mean', "
                         f'got reduction={reduction!r}')
    return reduction


def check_class_weight(class_weight: ClassWeight) -> Optional[Tensor]:
    """Return ``class_weight`` as a 1-D float tensor (or ``None``) after checking its values.

    Raises:
        ValueError: if it is not 1-D or holds a negative or non-finite value.
    """
    if class_weight is None:
        return None
    weights = torch.as_tensor(class_weight)
    if weights.dim() != 1 or weights.dtype == torch.bool or weights.is_complex():
        raise ValueError(f'class_weight must be a 1-D sequence of numbers, got {class_weight!r}')
    if not weights.is_floating_point():
        weights = weights.float()
    bad = ~torch.isfinite(weights) | (weights < 0)
    if bool(bad.any()):
        raise ValueError(
            f'class_weight must hold finite numbers >= 0, got {weights[bad].tolist()} '
            f'in {class_weight!r}')
    return weights


# -------------------------------------------------------------------------------------------------
# Pixel layout
# -------------------------------------------------------------------------------------------------
class Pixels(NamedTuple):
    """A validated batch in the layout the losses compute on.

    Attributes:
        logits: ``(N, C, M)`` logits in the compute dtype (float32 for half-precision input), a view
            of the input where possible.
        target: ``(N, M)`` int64 labels; ignored pixels hold 0 so that they can be gathered safely.
        valid: ``(N, M)`` bool mask of the non-ignored pixels.
        weight: ``(N, M)`` per-pixel weight in the compute dtype, or ``None``.
        num_valid: number of non-ignored pixels ``P`` (an ``int``, a 0-dim tensor on the device path).
        shape: label shape ``(N, *spatial)``, the shape of ``reduction='none'`` outputs.
    """

    logits: Tensor
    target: Tensor
    valid: Tensor
    weight: Optional[Tensor]
    num_valid: Union[int, Tensor]
    shape: torch.Size

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    def per_pixel(self, name: str, value: Tensor) -> Tensor:
        """Bring a per-pixel option broadcastable to ``shape`` (e.g. a focal ``gamma``) to ``(N, M)``."""
        _check_broadcastable(name, value, self.shape)
        value = value.to(device=self.logits.device, dtype=self.logits.dtype)
        return value.expand(self.shape).reshape(self.valid.shape)


def _check_broadcastable(name: str, tensor: Tensor, shape: torch.Size) -> None:
    try:
        broadcast = torch.broadcast_shapes(tensor.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(
            f'{name} of shape {tuple(tensor.shape)} does not broadcast to the label shape '
            f'{tuple(shape)}')


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are upcast to float32 so that log-softmax and exponentials stay finite."""
    return torch.float32 if dtype in _HALF_DTYPES else dtype


def check_logits_and_target(logits: Tensor, target: Tensor, ignore_index: int, *, layout: str,
                            check_channels: Callable[[Tensor], None], num_labels: int,
                            label_hint: str = '') -> Tensor:
    """The checks every loss shares: dtypes, ``layout`` of ``logits`` (checked by ``check_channels``), matching
    shapes and devices, labels in ``[0, num_labels)`` or ``ignore_index``
    (:func:`~calibseg.utils.validation.check_labels`, with ``label_hint`` appended to its message). Returns the
    ``(N, *spatial)`` mask of non-ignored pixels."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError('logits must be a floating-point tensor, '
                        f'got {getattr(logits, "dtype", logits)!r}')
    if not isinstance(target, Tensor) or target.is_floating_point() or target.is_complex() \
            or target.dtype == torch.bool:
        raise TypeError('target must be an integer tensor, '
                        f'got {getattr(target, "dtype", target)!r}')
    if logits.dim() < 2:
        raise ValueError(f'logits must have shape {layout}, got {tuple(logits.shape)}')
    check_channels(logits)
    expected = logits.shape[:1] + logits.shape[2:]
    if target.shape != expected:
        raise ValueError(f'target of shape {tuple(target.shape)} does not match logits of shape '
                         f'{tuple(logits.shape)}: expected {tuple(expected)}')
    if target.device != logits.device:
        raise ValueError(f'target is on {target.device} but logits are on {logits.device}')
    ignore_index = check_ignore_index(ignore_index)
    valid = target != ignore_index
    if defer_value_checks(logits):
        _assert_finite_async(logits)
        in_range = ((target >= 0) & (target < num_labels)) | ~valid
        torch._assert_async(in_range.all(), f'target contain values outside [0, {num_labels}) that are not '
                            f'ignore_index={ignore_index} (set_sync_checks(True) lists them)')
        return valid
    check_finite_logits(logits)
    check_labels('target', target, num_labels, ignore_index=ignore_index, hint=label_hint)
    return valid


def check_finite_logits(logits: Tensor) -> None:
    """Every logit must be finite, at ignored pixels too (their gradients would poison the batch).

    A ``-inf`` logit (a class masked out) makes a calibration loss infinite where the class is penalised (label
    smoothing, MbLS and ACLS push every logit towards the others) and its gradients non-finite, so it is refused
    with the count of offending values rather than turned into a silent ``inf`` or ``nan``.
    """
    values = logits.detach()
    if values.numel() == 0:
        return
    # min and max are finite iff every value is (NaN propagates through both): one reduction pass, ~20x cheaper
    # on CPU than isfinite().all(), which alone cost 0.6x mmseg's CE forward+backward at (8, 21, 512, 512)
    low, high = torch.aminmax(values)
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        raise ValueError(f'logits contain {int(torch.isnan(values).sum())} NaN and {int(torch.isinf(values).sum())} '
                         f'infinite value(s) among {values.numel()}; calibseg losses need finite logits (mask a '
                         'class with a large negative finite value, not -inf)')


def _assert_finite_async(logits: Tensor) -> None:
    """:func:`check_finite_logits` as an asynchronous device assertion (no host synchronisation)."""
    if logits.numel() == 0:
        return
    low, high = torch.aminmax(logits.detach())
    torch._assert_async(torch.isfinite(low) & torch.isfinite(high),
                        'logits contain NaN or infinite values; calibseg losses need finite logits')


def flat_size(shape: Sequence[int]) -> int:
    """Number of elements of ``shape`` (1 for ``()``): the pixels per image, also for an empty batch, where
    ``reshape(N, -1)`` cannot infer it."""
    return math.prod(shape)


def _check_softmax_channels(logits: Tensor) -> None:
    if logits.shape[1] < 2:
        raise ValueError(f'softmax losses need at least 2 classes, got logits with '
                         f'C={logits.shape[1]}; one-channel (sigmoid) heads need a binary loss')


def _check_inputs(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Check types, shapes and labels of a softmax loss; return the mask of non-ignored pixels."""
    num_classes = logits.shape[1] if isinstance(logits, Tensor) and logits.dim() >= 2 else 0
    return check_logits_and_target(logits, target, ignore_index, layout='(N, C, *spatial)',
                                   check_channels=_check_softmax_channels, num_labels=num_classes)


def prepare_pixels(logits: Tensor, target: Tensor, *, ignore_index: int = 255,
                   weight: Optional[Tensor] = None) -> Pixels:
    """Validate a batch and bring it to the ``(N, C, M)`` / ``(N, M)`` layout of the losses.

    Args:
        logits: ``(N, C, *spatial)`` raw scores (``(N, C)`` for plain classification), ``C >= 2``.
        target: ``(N, *spatial)`` integer labels in ``[0, C)`` or equal to ``ignore_index``.
        ignore_index: label value of pixels that take no part in the loss.
        weight: optional per-pixel weight broadcastable to ``target.shape`` (mmseg's
            ``seg_weight``).

    Returns:
        :class:`Pixels`.

    Raises:
        TypeError: if ``logits`` is not floating point or ``target`` not integer.
        ValueError: on a shape mismatch, fewer than two classes, or labels outside ``[0, C)`` that
            are not ``ignore_index`` (the message lists the offending values).
    """
    valid = _check_inputs(logits, target, ignore_index)
    batch, num_classes = logits.shape[:2]
    pixels_per_image = flat_size(target.shape[1:])
    flat_logits = logits.reshape(batch, num_classes, pixels_per_image).to(compute_dtype(logits.dtype))
    flat_valid = valid.reshape(batch, pixels_per_image)
    flat_target = target.reshape(batch, pixels_per_image).long().masked_fill(~flat_valid, 0)
    # the pixel count stays a tensor on the device path (int() would wait for the device)
    num_valid = flat_valid.sum() if on_device_path(flat_valid) else int(flat_valid.sum())
    pixels = Pixels(flat_logits, flat_target, flat_valid, None, num_valid, target.shape)
    if weight is not None:
        if not isinstance(weight, Tensor):
            raise TypeError(f'weight must be a tensor or None, got {type(weight).__name__}')
        pixels = pixels._replace(weight=pixels.per_pixel('weight', weight))
    return pixels


def flatten_pixels(logits: Tensor, target: Tensor, *,
                   ignore_index: int = 255) -> Tuple[Tensor, Tensor]:
    """Rows of the non-ignored pixels: ``(P, C)`` logits and ``(P,)`` int64 labels.

    Validates like :func:`prepare_pixels` and keeps the input dtype. For code that wants pixels as
    rows (metrics, samplers); the losses themselves mask instead (see the module docstring).
    """
    valid = _check_inputs(logits, target, ignore_index)
    rows = logits.movedim(1, -1)[valid]
    return rows, target[valid].long()


# -------------------------------------------------------------------------------------------------
# Building blocks
# -------------------------------------------------------------------------------------------------
def gather_target(per_class: Tensor, pixels: Pixels) -> Tensor:
    """Entry of the labelled class of every pixel: ``(N, C, M) -> (N, M)``."""
    return per_class.gather(1, pixels.target.unsqueeze(1)).squeeze(1)


def target_class_weight(class_weight: ClassWeight, pixels: Pixels) -> Optional[Tensor]:
    """``class_weight[y]`` for every pixel (``(N, M)``), or ``None``.

    Raises:
        ValueError: if ``class_weight`` does not hold exactly one value per class.
    """
    if isinstance(class_weight, Tensor) and on_device_path(class_weight) and not _SYNC_CHECKS:
        weights = class_weight  # checked where it was built (a registered loss checks it at construction)
        if weights.dim() != 1:
            raise ValueError(f'class_weight must be 1-D, got shape {tuple(weights.shape)}')
    else:
        weights = check_class_weight(class_weight)
    if weights is None:
        return None
    if weights.numel() != pixels.num_classes:
        raise ValueError(f'class_weight has {weights.numel()} entries but the logits have '
                         f'{pixels.num_classes} classes')
    weights = weights.to(device=pixels.logits.device, dtype=pixels.logits.dtype)
    return weights[pixels.target]


def weighted_nll(log_p_y: Tensor, class_weight: ClassWeight, pixels: Pixels) -> Tensor:
    """Per-pixel ``-c_y log p_y`` (``c_y = 1`` without ``class_weight``)."""
    weights = target_class_weight(class_weight, pixels)
    return -log_p_y if weights is None else -log_p_y * weights


def reduce_loss(pixel_loss: Tensor, pixels: Pixels, *, reduction: str,
                avg_factor: Optional[Union[float, Tensor]] = None) -> Tensor:
    """Zero the ignored pixels, apply the per-pixel ``weight`` and reduce (mmseg's semantics).

    * ``'mean'``: ``sum_n w_n l_n / P`` with ``P`` the number of non-ignored pixels (mmseg's
      ``avg_non_ignore=True``); the denominator is the pixel count, not ``sum_n w_n``, as in mmseg's
      ``weight_reduce_loss``. With ``avg_factor`` the denominator is ``avg_factor + eps`` (float32
      eps, again as in mmseg).
    * ``'sum'``: ``sum_n w_n l_n``.
    * ``'none'``: ``(N, *spatial)`` map of ``w_n l_n`` with zeros at ignored pixels.

    Ignored pixels are selected out with ``torch.where``, so whatever was computed for them never
    reaches the value. With no valid pixel the result is an exact zero still connected to the graph.
    """
    pixel_loss = torch.where(pixels.valid, pixel_loss, pixel_loss.new_zeros(()))
    if pixels.weight is not None:
        pixel_loss = pixel_loss * pixels.weight
    if reduction == 'none':
        return pixel_loss.reshape(pixels.shape)
    total = pixel_loss.sum()
    if reduction == 'sum':
        return total
    if avg_factor is None:
        if isinstance(pixels.num_valid, Tensor):
            return total / pixels.num_valid.clamp_min(1)
        return total / max(pixels.num_valid, 1)
    return total / (avg_factor + torch.finfo(torch.float32).eps)
