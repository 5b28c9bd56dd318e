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
           'check_positive_int', 'check_int', 'check_bounds', 'check_choice', 'check_labels']


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
                 shape: Optional[Sequence[int]] = None) -> None:
    """Check an integer label map: values in ``[0, num_classes)`` or equal to ``ignore_index``.

    Args:
        name: what the message calls the labels (``'labels'``, ``'target'``, ``'img: labels'``).
        labels: integer tensor of any shape.
        num_classes: number of classes ``K``.
        ignore_index: label value excluded from the range check (``None``: every value is checked).
        shape: the expected shape, if any (e.g. the logits' shape without the class dimension).

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
                         f'not ignore_index={ignore_index}')
