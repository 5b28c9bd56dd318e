"""Saving, loading and building calibrators, and folding a fitted temperature into the classifier convolution.

File format (``torch.save`` of a dict, loaded back with ``weights_only=True``, so no code is executed)::

    {'format': 'calibseg.calibrator', 'version': 1,
     'method': 'TemperatureScaling',          # the calibrator's class name
     'num_classes': 21,                       # logit channels (1 for the binary calibrators)
     'config': {...},                         # constructor arguments (get_config())
     'state_dict': {...},                     # fitted tensors, on the CPU
     'meta': {...},                           # caller's metadata: str/int/float/bool/None, lists, tuples, dicts
     'checksum': 'sha256:...'}                # of everything above (method, num_classes, config, tensors, meta)

Files are written atomically (a temporary file in the destination's folder, fsynced, then renamed over the
destination), so a crash leaves the old file or the new one, never a truncated mix. On load every field is
validated: a truncated or foreign file, a missing key, a header whose class count disagrees with the stored
configuration or tensors, non-finite or out-of-range parameters, and content that does not match the stored
checksum (a flipped byte, a hand edit) raise :class:`CalibratorFileError` (a ``ValueError``) naming the file and
the problem; a wrong value is never returned.
"""
import copy
import hashlib
import json
import os
import tempfile
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

__all__ = ['CALIBRATORS', 'CalibratorFileError', 'content_checksum', 'build_calibrator', 'save_calibrator',
           'load_calibrator', 'fold_temperature_into_conv', 'atomic_torch_save']

#: Calibrator classes by ``method`` name (their class names).
CALIBRATORS: Dict[str, Type[BaseCalibrator]] = {
    cls.method: cls for cls in (TemperatureScaling, ClasswiseTemperatureScaling, VectorScaling,
                                LocalTemperatureScaling, BinaryTemperatureScaling, BinaryTemperatureBiasScaling)}

_FORMAT = 'calibseg.calibrator'
_REQUIRED = ('format', 'version', 'method', 'num_classes', 'config', 'state_dict')
_VERSION = 1
PathLike = Union[str, 'os.PathLike[str]']


class CalibratorFileError(ValueError):
    """A calibrator file that cannot be read back faithfully (truncated, foreign, incomplete or inconsistent)."""


def atomic_torch_save(obj: Any, path: PathLike, *, overwrite: bool = True) -> None:
    """``torch.save(obj, path)`` through a temporary file in ``path``'s folder, fsynced and renamed over ``path``.

    A crash or a full disk leaves the previous ``path`` (or none), never a partial file. Missing parent folders
    are created.

    Args:
        obj: what to save.
        path: the destination.
        overwrite: replace an existing ``path`` (else ``FileExistsError``).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f'{path} exists; refusing to overwrite it (pass overwrite=True / --force)')
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def content_checksum(payload: Dict[str, Any]) -> str:
    """``'sha256:<hex>'`` of a calibrator file's content: method, class count, config, meta (canonical JSON) and
    every tensor of the state dict (name, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    head = {k: payload.get(k) for k in ('format', 'version', 'method', 'num_classes', 'config', 'meta')}
    digest.update(json.dumps(head, sort_keys=True, default=repr).encode())
    for name in sorted(payload.get('state_dict', {})):
        tensor = payload['state_dict'][name]
        digest.update(f'|{name}|{tensor.dtype}|{tuple(tensor.shape)}|'.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return 'sha256:' + digest.hexdigest()


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


def save_calibrator(path: PathLike, calibrator: BaseCalibrator, meta: Optional[Dict[str, Any]] = None, *,
                    overwrite: bool = True) -> None:
    """Write a fitted calibrator to ``path`` atomically (see the module docstring for the format).

    Args:
        path: destination file.
        calibrator: a fitted calibrator.
        meta: the caller's metadata (e.g. the config, checkpoint and data set it was fitted on).
        overwrite: replace an existing file (else ``FileExistsError``).

    Raises:
        ValueError: not a calibseg calibrator, not fitted, or ``meta`` with values other than plain data.

    Example:
        >>> import os, tempfile
        >>> ts = TemperatureScaling(num_classes=3).fit(torch.randn(50, 3), torch.randint(0, 3, (50,)))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, 'ts.pth')
        ...     save_calibrator(path, ts, {'split': 'val'})
        ...     load_calibrator(path, expected_num_classes=3).meta
        {'split': 'val'}
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
    payload['checksum'] = content_checksum(payload)
    atomic_torch_save(payload, path, overwrite=overwrite)


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
        CalibratorFileError: (a ``ValueError``) not a calibseg calibrator file (truncated, foreign), a missing key,
            an unknown method, a header inconsistent with the stored configuration or tensors, non-finite or
            out-of-range parameters, or a method / class-count mismatch with the expectations.
    """
    def fail(problem: str) -> CalibratorFileError:
        return CalibratorFileError(f'{path}: {problem}')

    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # unpickling errors of foreign or truncated files come in many types
        raise fail(f'not a readable calibseg calibrator file (truncated or foreign?): {error}') from error
    if not isinstance(payload, dict) or payload.get('format') != _FORMAT:
        raise fail(f'not a calibseg calibrator file (no format={_FORMAT!r} entry)')
    if payload.get('version') != _VERSION:
        raise fail(f'calibrator file version {payload.get("version")!r}; this calibseg reads version {_VERSION}')
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise fail(f'missing required key(s) {missing} (a calibrator file holds {list(_REQUIRED)} and meta)')
    method, num_classes, config, state = (payload[k] for k in ('method', 'num_classes', 'config', 'state_dict'))
    if method not in CALIBRATORS:
        raise fail(f'unknown calibrator method {method!r} (known: {sorted(CALIBRATORS)})')
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise fail(f'num_classes must be a positive int, got {num_classes!r}')
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise fail('config and state_dict must be dicts')
    if expected_method is not None and method != expected_method:
        raise fail(f'holds a {method} calibrator, but expected_method={expected_method!r}')
    if expected_num_classes is not None and num_classes != expected_num_classes:
        raise fail(f'holds a {method} calibrator for num_classes={num_classes}, but '
                   f'expected_num_classes={expected_num_classes}')
    try:
        calibrator = build_calibrator(method, config)
    except ValueError as error:
        raise fail(f'invalid stored configuration: {error}') from error
    if calibrator.num_classes != num_classes:
        raise fail(f'the header says num_classes={num_classes} but the stored configuration builds a calibrator '
                   f'with num_classes={calibrator.num_classes}')
    try:
        calibrator.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as error:  # missing/unexpected keys, shape mismatches
        raise fail(f'the stored tensors do not match the {method} configuration: {error}') from error
    if not calibrator.fitted:
        raise fail(f'holds an unfitted {method} calibrator')
    try:
        calibrator.check_parameters()
    except ValueError as error:
        raise fail(str(error)) from error
    if payload.get('checksum') != content_checksum(payload):
        raise fail('the content does not match its checksum: the file is corrupted or was edited '
                   f"({'no checksum' if 'checksum' not in payload else 'checksum mismatch'}); refit or restore it")
    calibrator.to(map_location)
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
