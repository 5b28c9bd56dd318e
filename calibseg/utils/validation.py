"""Validators shared by the whole toolkit: options and label maps, with one argument order ``(name, value, ...)``.

``name`` is what the error message calls the value (``'gamma'``, ``'model.rankmixup.alpha'``,
``'labels of batch 3'``); every check raises ``ValueError`` naming it and the offending value, never an
``assert``, and returns the value normalised (``float``/``int``) so that a constructor can write
``self.gamma = check_non_negative('gamma', gamma)``. ``bool`` is never accepted as a number.

This module imports nothing but PyTorch: the pure core (:mod:`calibseg.functional`,
:mod:`calibseg.calibrators`) uses it.

Example:
    >>> from calibseg.utils.validation import check_in_range, check_positive_int
    >>> check_in_range('smoothing', 0.1, 0.0, 1.0, high_inclusive=False)
    0.1
    >>> check_positive_int('max_iter', 0)
    Traceback (most recent call last):
    ...
    ValueError: max_iter must be an integer >= 1, got 0
"""
import math
import numbers
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['is_real', 'check_finite', 'check_non_negative', 'check_positive_float', 'check_in_range',
           'check_positive_int', 'check_int', 'check_bounds', 'check_choice', 'check_labels', 'check_logits',
           'check_binary_logits']


def is_real(value: Any) -> bool:
    """True for a real number (Python or NumPy scalar) that is not a ``bool``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_finite(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number, else raise ``ValueError``."""
    if not is_real(value) or not math.isfinite(value):
        raise ValueError(f'{name} must be a finite number, got {value!r}')
    return float(value)


def check_non_negative(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number ``>= 0``, else raise ``ValueError``."""
    if not is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
    return float(value)


def check_positive_float(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite number ``> 0``, else raise ``ValueError``."""
    if not is_real(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f'{name} must be a finite number > 0, got {value!r}')
    return float(value)


def check_in_range(name: str, value: Any, low: float, high: float, *, high_inclusive: bool,
                   low_inclusive: bool = True) -> float:
    """Return ``value`` as a float if it lies in ``[low, high)`` (``]`` with ``high_inclusive``; ``(`` without
    ``low_inclusive``), else raise ``ValueError``."""
    ok = is_real(value) and math.isfinite(value)
    ok = ok and (low <= value if low_inclusive else low < value)
    ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        left = '[' if low_inclusive else '('
        right = ']' if high_inclusive else ')'
        raise ValueError(f'{name} must lie in {left}{low}, {high}{right}, got {value!r}')
    return float(value)


def check_positive_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False) -> Optional[int]:
    """Return ``value`` as an int if it is an integer ``>= minimum`` (``None`` passes with ``allow_none``)."""
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}')
    return int(value)


def check_int(name: str, value: Any, *, allow_none: bool = False) -> Optional[int]:
    """Return ``value`` as an int if it is an integer of any sign (``None`` passes with ``allow_none``); e.g. an
    ``ignore_index``, which is a label value, not a position."""
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f'{name} must be an int{" or None" if allow_none else ""}, got {value!r}')
    return int(value)


def check_bounds(low_name: str, low: Any, high_name: str, high: Any) -> Tuple[float, float]:
    """Validate an interval ``0 < low < high`` given as two ``(name, value)`` pairs; return both as floats.

    >>> check_bounds('t_min', 0.05, 't_max', 20)
    (0.05, 20.0)
    """
    low = check_positive_float(low_name, low)
    high = check_positive_float(high_name, high)
    if low >= high:
        raise ValueError(f'{low_name} must be < {high_name}, got {low_name}={low}, {high_name}={high}')
    return low, high


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in tuple(choices):
        raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')
    return value


def check_labels(name: str, labels: Any, num_classes: int, *, ignore_index: Optional[int] = None,
                 shape: Optional[Sequence[int]] = None, hint: str = '') -> None:
    """Check an integer label map: values in ``[0, num_classes)`` or equal to ``ignore_index``.

    Args:
        name: what the message calls the labels (``'labels'``, ``'target'``, ``'img: labels'``).
        labels: integer tensor of any shape.
        num_classes: number of classes ``K``.
        ignore_index: label value excluded from the range check (``None``: every value is checked).
        shape: the expected shape, if any (e.g. the logits' shape without the class dimension).
        hint: appended to the message on out-of-range values (e.g. how to convert 0/255 masks).

    Raises:
        ValueError: not an integer tensor, a shape other than ``shape``, or values that are neither a class nor
            ``ignore_index`` (the message lists up to 20 of them, sorted).

    >>> check_labels('target', torch.tensor([0, 2, 255]), 3, ignore_index=255)
    >>> check_labels('target', torch.tensor([0, 3, -1]), 3, ignore_index=255)
    Traceback (most recent call last):
    ...
    ValueError: target contain values [-1, 3] outside [0, 3) that are not ignore_index=255
    """
    if not isinstance(labels, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor, got {type(labels).__name__}')
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f'{name} must be an integer tensor, got dtype {labels.dtype}')
    if shape is not None and tuple(labels.shape) != tuple(shape):
        raise ValueError(f'{name} of shape {tuple(labels.shape)} do not match the expected shape {tuple(shape)}')
    if labels.numel() == 0:
        return
    lo, hi = torch.aminmax(labels)
    if int(lo) >= 0 and int(hi) < num_classes:  # one pass in the common case
        return
    out = (labels < 0) | (labels >= num_classes)
    if ignore_index is not None:
        out &= labels != ignore_index
    if bool(out.any()):
        bad = torch.unique(labels[out])
        more = f' (and {bad.numel() - 20} more)' if bad.numel() > 20 else ''
        raise ValueError(f'{name} contain values {bad[:20].tolist()}{more} outside [0, {num_classes}) that are '
                         f'not ignore_index={ignore_index}' + (f' ({hint})' if hint else ''))


def _check_float_tensor(name: str, value: Any) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(f'{name} must be a torch.Tensor, got {type(value).__name__}')
    if not value.is_floating_point():
        raise ValueError(f'{name} must be a floating-point tensor of logits, got dtype {value.dtype}')


def _check_all_finite(name: str, value: Tensor, advice: str) -> None:
    finite = torch.isfinite(value.detach())
    if not bool(finite.all()):
        raise ValueError(f'{name} contains {int((~finite).sum())} NaN or infinite value(s); {advice}')


def check_logits(name: str, logits: Any, num_classes: int) -> None:
    """Check multi-class logits ``(N, K, *spatial)`` or ``(P, K)``: floating point, ``K = num_classes`` along
    dimension 1, every value finite.

    Raises:
        ValueError: naming ``name`` and the problem.

    >>> check_logits('logits', torch.zeros(2, 3, 4, 4), 3)
    >>> check_logits('logits', torch.zeros(2, 4), 3)
    Traceback (most recent call last):
    ...
    ValueError: logits of shape (2, 4) has 4 classes along dimension 1, expected num_classes=3
    """
    _check_float_tensor(name, logits)
    if logits.dim() < 2:
        raise ValueError(f'{name} must have shape (N, K, H, W) or (P, K), got {tuple(logits.shape)}')
    if logits.shape[1] != num_classes:
        raise ValueError(f'{name} of shape {tuple(logits.shape)} has {logits.shape[1]} classes along dimension 1, '
                         f'expected num_classes={num_classes}')
    _check_all_finite(name, logits, 'finite logits are needed')


def check_binary_logits(name: str, logits: Any) -> None:
    """Check one-channel logits ``(N, 1, *spatial)``, ``(P, 1)``, ``(N, H, W)`` or ``(P,)``: floating point, one
    channel, every value finite. 2-D and 4-D (or higher) tensors have their channel in dimension 1; 1-D and 3-D
    tensors are maps without a channel dimension.

    Raises:
        ValueError: naming ``name`` and the problem.
    """
    _check_float_tensor(name, logits)
    if logits.dim() == 0:
        raise ValueError(f'{name} must have shape (N, 1, H, W), (N, H, W), (P, 1) or (P,), got a scalar')
    if (logits.dim() == 2 or logits.dim() >= 4) and logits.shape[1] != 1:
        raise ValueError(f'{name} of shape {tuple(logits.shape)} has {logits.shape[1]} channels along dimension 1; '
                         'binary logits have one channel (K > 1 needs a multi-class method)')
    _check_all_finite(name, logits, 'finite logits are needed (probabilities of exactly 0 or 1 converted with '
                                    'torch.logit give infinities: clamp first)')
