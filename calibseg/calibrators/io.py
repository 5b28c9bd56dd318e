"""Saving, loading and building calibrators, and folding a fitted temperature into the classifier convolution.

File format (``torch.save`` of a dict, loaded back with ``weights_only=True``, so no code is executed)::

    {'format': 'calibseg.calibrator', 'version': 1,
     'method': 'TemperatureScaling',          # the calibrator's class name
     'num_classes': 21,                       # logit channels (1 for the binary calibrators)
     'config': {...},                         # constructor arguments (get_config())
     'state_dict': {...},                     # fitted tensors, on the CPU
     'meta': {...}}                           # caller's metadata: str/int/float/bool/None, lists, tuples, dicts
"""
import copy
import os
from typing import Any, Dict, Optional, Type, Union

import torch
from torch import Tensor, nn

from .base import BaseCalibrator
from .binary_temperature_bias_scaling import BinaryTemperatureBiasScaling
from .binary_temperature_scaling import BinaryTemperatureScaling
from .classwise_temperature_scaling import ClasswiseTemperatureScaling
from .local_temperature_scaling import LocalTemperatureScaling
from .temperature_scaling import TemperatureScaling
from .vector_scaling import VectorScaling

__all__ = ['CALIBRATORS', 'build_calibrator', 'save_calibrator', 'load_calibrator', 'fold_temperature_into_conv']

#: Calibrator classes by ``method`` name (their class names).
CALIBRATORS: Dict[str, Type[BaseCalibrator]] = {
    cls.method: cls for cls in (TemperatureScaling, ClasswiseTemperatureScaling, VectorScaling,
                                LocalTemperatureScaling, BinaryTemperatureScaling, BinaryTemperatureBiasScaling)}

_FORMAT = 'calibseg.calibrator'
_VERSION = 1
PathLike = Union[str, 'os.PathLike[str]']


def build_calibrator(method: str, config: Optional[Dict[str, Any]] = None) -> BaseCalibrator:
    """Build an unfitted calibrator from its ``method`` name and constructor arguments.

    Example:
        >>> build_calibrator('TemperatureScaling', {'num_classes': 21, 'method': 'grid'})
        TemperatureScaling(num_classes=21, method='grid', grid_metric='ece', 100 temperatures, unfitted)

    Raises:
        ValueError: unknown ``method``, or constructor arguments it rejects (named in the message).
    """
    if method not in CALIBRATORS:
        raise ValueError(f'method must be one of {sorted(CALIBRATORS)}, got {method!r}')
    try:
        return CALIBRATORS[method](**dict(config or {}))
    except TypeError as error:  # unknown or missing keyword argument
        raise ValueError(f'invalid config for {method}: {error}') from error


def _check_meta(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_meta(item, f'{where}[{i}]')
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f'meta key {where}[{key!r}] must be a str or int, got {type(key).__name__}')
            _check_meta(item, f'{where}[{key!r}]')
        return
    raise ValueError(f'{where} must hold only str/int/float/bool/None, lists, tuples and dicts (the file is loaded '
                     f'with weights_only=True), got {type(value).__name__}')


def save_calibrator(path: PathLike, calibrator: BaseCalibrator, meta: Optional[Dict[str, Any]] = None) -> None:
    """Write a fitted calibrator to ``path`` (see the module docstring for the format).

    Args:
        path: destination file.
        calibrator: a fitted calibrator.
        meta: the caller's metadata (e.g. the config, checkpoint and data set it was fitted on).

    Raises:
        ValueError: not a calibseg calibrator, not fitted, or ``meta`` with values other than plain data.
    """
    if not isinstance(calibrator, BaseCalibrator) or calibrator.method not in CALIBRATORS:
        raise ValueError(f'calibrator must be one of {sorted(CALIBRATORS)}, got {type(calibrator).__name__}')
    if not calibrator.fitted:
        raise ValueError(f'calibrator {calibrator.method} is not fitted; fit it before saving')
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f'meta must be a dict or None, got {type(meta).__name__}')
    _check_meta(meta or {}, 'meta')
    payload = {'format': _FORMAT, 'version': _VERSION, 'method': calibrator.method,
               'num_classes': calibrator.num_classes, 'config': calibrator.get_config(),
               'state_dict': {k: v.detach().cpu() for k, v in calibrator.state_dict().items()},
               'meta': dict(meta or {})}
    torch.save(payload, path)


def load_calibrator(path: PathLike, *, expected_method: Optional[str] = None,
                    expected_num_classes: Optional[int] = None,
                    map_location: Union[str, torch.device] = 'cpu') -> BaseCalibrator:
    """Read a calibrator written by :func:`save_calibrator`; ``meta`` is restored as ``calibrator.meta``.

    Args:
        path: the file.
        expected_method: fail unless the file holds this method (e.g. the one a config asks for).
        expected_num_classes: fail unless the calibrator has this many logit channels (the model's K).
        map_location: device of the loaded tensors.

    Raises:
        ValueError: not a calibseg calibrator file, an unknown method, or a method / class-count mismatch.
    """
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling errors of foreign files come in many types
        raise ValueError(f'{path} is not a calibseg calibrator file: {error}') from error
    if not isinstance(payload, dict) or payload.get('format') != _FORMAT:
        raise ValueError(f'{path} is not a calibseg calibrator file (no format={_FORMAT!r} entry)')
    if payload.get('version') != _VERSION:
        raise ValueError(f'{path} has calibrator file version {payload.get("version")!r}; this calibseg reads '
                         f'version {_VERSION}')
    method, num_classes = payload['method'], payload['num_classes']
    if method not in CALIBRATORS:
        raise ValueError(f'{path} holds an unknown calibrator method {method!r} (known: {sorted(CALIBRATORS)})')
    if expected_method is not None and method != expected_method:
        raise ValueError(f'{path} holds a {method} calibrator, but expected_method={expected_method!r}')
    if expected_num_classes is not None and num_classes != expected_num_classes:
        raise ValueError(f'{path} holds a {method} calibrator for num_classes={num_classes}, but '
                         f'expected_num_classes={expected_num_classes}')
    calibrator = build_calibrator(method, payload['config'])
    calibrator.load_state_dict(payload['state_dict'])
    calibrator.to(map_location)
    if not calibrator.fitted:
        raise ValueError(f'{path} holds an unfitted {method} calibrator')
    calibrator.meta = payload.get('meta', {})
    return calibrator


def fold_temperature_into_conv(conv: nn.Conv2d, calibrator: BaseCalibrator) -> nn.Conv2d:
    """A copy of ``conv`` whose outputs are the calibrated logits, ``calibrator(conv(x))``.

    For the per-class affine calibrators the calibrated logit ``k`` is ``a_k * z_k + c_k`` with ``z = conv(x)``,
    so the new convolution has weights ``a_k W_k`` and bias ``a_k b_k + c_k``:
    ``TemperatureScaling`` (``a_k = 1/T``, ``c_k = 0``), ``ClasswiseTemperatureScaling`` (``1/T_k``, 0),
    ``VectorScaling`` (``w_k``, ``b_k``; a bias is added if ``conv`` has none) and the binary calibrators (one
    channel). This exports a plain checkpoint in which the decode head's ``conv_seg`` emits calibrated logits.

    Raises:
        ValueError: not a ``Conv2d``, an unfitted or per-pixel calibrator (local temperature scaling cannot be
            folded), or ``conv.out_channels`` differing from the calibrator's ``num_classes``.
    """
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f'conv must be a torch.nn.Conv2d, got {type(conv).__name__}')
    if not isinstance(calibrator, BaseCalibrator):
        raise ValueError(f'calibrator must be a calibseg calibrator, got {type(calibrator).__name__}')
    if not calibrator.fitted:
        raise ValueError(f'calibrator {calibrator.method} is not fitted')
    if conv.out_channels != calibrator.num_classes:
        raise ValueError(f'conv has out_channels={conv.out_channels} but the calibrator has '
                         f'num_classes={calibrator.num_classes}')
    k = calibrator.num_classes
    with torch.no_grad():
        if isinstance(calibrator, (TemperatureScaling, BinaryTemperatureScaling)):
            scale, shift = calibrator.temperature.reciprocal().expand(k), None
        elif isinstance(calibrator, ClasswiseTemperatureScaling):
            scale, shift = calibrator.temperature.reciprocal(), None
        elif isinstance(calibrator, VectorScaling):
            scale, shift = calibrator.weight.detach(), calibrator.bias.detach()
        elif isinstance(calibrator, BinaryTemperatureBiasScaling):
            scale, shift = calibrator.temperature.reciprocal().expand(1), calibrator.bias.detach().expand(1)
        else:
            raise ValueError(f'{calibrator.method} cannot be folded into a convolution (only per-class affine '
                             'calibrators can; local temperature scaling depends on the pixel)')
        folded = copy.deepcopy(conv)
        weight: Tensor = folded.weight
        scale = scale.to(weight)
        weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))
        if folded.bias is not None:
            folded.bias.mul_(scale)
            if shift is not None:
                folded.bias.add_(shift.to(weight))
        elif shift is not None:
            folded.bias = nn.Parameter(shift.to(weight).clone())
    return folded
