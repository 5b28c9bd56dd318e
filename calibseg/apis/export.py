"""Fold a fitted TS, CTS, VS (or binary) calibrator into the decode head's classifier: a plain mmseg checkpoint.

The calibrated logit ``k`` of a per-class affine calibrator is ``a_k z_k + c_k`` (TS: ``a_k = 1/T``; CTS:
``1/T_k``; VS: ``w_k`` and ``c_k = b_k``; the binary calibrators likewise on one channel). Since
``z = conv_seg(x) = W x + b``, the exported ``decode_head.conv_seg`` has weights ``a_k W_k`` and bias
``a_k b_k + c_k`` (:func:`calibseg.calibrators.fold_temperature_into_conv`), so the **uncalibrated** config
(``EncoderDecoder``) loaded with the exported file gives the calibrated logits, with no calibseg component at test
time. Local temperature scaling depends on the pixel and cannot be folded (use its ``CalibratedEncoderDecoder``
config). The config may be the training config or a post-hoc config (its calibrator entry is ignored).

The exported file holds ``{'meta': ..., 'state_dict': ...}``: the network's weights and the checkpoint's plain-data
meta (dataset classes, config text, ...) plus ``meta['calibseg_export']`` (calibrator, source files). Everything in
it is plain data, so it also loads with ``torch.load(weights_only=True)``. It is written atomically and never over
its own inputs.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..calibrators import LocalTemperatureScaling, fold_temperature_into_conv, load_calibrator
from ..calibrators.io import atomic_torch_save
from .inference import plain_model_cfg
from .posthoc import check_output_path

__all__ = ['export_calibrated_checkpoint', 'plain_data', 'load_exported_checkpoint']

_DROP = object()


def plain_data(value: Any) -> Any:
    """``value`` without what ``torch.load(weights_only=True)`` rejects (non-plain objects are dropped).

    Example:
        >>> plain_data({'a': 1, 'b': object(), 'c': [1, 'x', object()]})
        {'a': 1, 'c': [1, 'x']}
    """
    out = _plain(value)
    return None if out is _DROP else out


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return type(value)(v for v in items if v is not _DROP)
    if isinstance(value, dict):
        out = {k: _plain(v) for k, v in value.items() if isinstance(k, (str, int))}
        return {k: v for k, v in out.items() if v is not _DROP}
    return _DROP


def export_calibrated_checkpoint(config: Any, checkpoint: str, calibrator_file: str, out: str, *,
                                 weights_only: bool = False, force: bool = False,
                                 cfg_options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Build the plain model of ``config``, load ``checkpoint``, fold the calibrator into
    ``decode_head.conv_seg`` and write ``out`` atomically; return the written dict.

    Args:
        config: an mmengine ``Config`` or a config path (training or post-hoc config of the checkpoint).
        checkpoint: the trained network (trusted file, full unpickling; ``weights_only=True``: torch's safe loader).
        calibrator_file: a file written by :func:`calibseg.apis.fit_calibrator` (TS, CTS, VS, binary TS / TS+b).
        out: the exported checkpoint; never one of the inputs (refused even with ``force``).
        weights_only: load the checkpoint with torch's safe loader.
        force: overwrite an existing ``out``.
        cfg_options: overrides merged into the config.

    Raises:
        ValueError: an LTS calibrator, a head without a ``Conv2d`` ``conv_seg``, a calibrator whose number of
            channels differs from the head's, or ``out`` naming an input.
        FileExistsError: ``out`` exists and ``force`` is false.
        FileNotFoundError: a missing input.

    Example::

        export_calibrated_checkpoint('configs/baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py',
                                     'iter_600.pth', 'iter_600_calib-ts.pth', 'iter_600_ts-folded.pth')
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model, weights_to_cpu
    from mmseg.registry import MODELS

    from ..compat import trusted

    for path in (checkpoint, calibrator_file):
        if not osp.isfile(path):
            raise FileNotFoundError(f'file not found: {path}')
    inputs = [checkpoint, calibrator_file] + ([config] if isinstance(config, str) else [])
    check_output_path(out, inputs=inputs, force=force)
    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model.copy()
    plain_model_cfg(model_cfg)
    model = MODELS.build(model_cfg)
    conv = getattr(model.decode_head, 'conv_seg', None)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f'{type(model.decode_head).__name__} has no Conv2d conv_seg to fold the calibrator into')
    calibrator = load_calibrator(calibrator_file, expected_num_classes=conv.out_channels)
    if isinstance(calibrator, LocalTemperatureScaling):
        raise ValueError(f'{calibrator_file} holds a LocalTemperatureScaling calibrator: its temperature depends on '
                         'the pixel, so it cannot be folded into the classifier convolution; test it with its '
                         "CalibratedEncoderDecoder config (configs/posthoc/*-lts_*.py) instead")
    source = _load_checkpoint(checkpoint if weights_only else trusted(checkpoint), map_location='cpu')
    _load_checkpoint_to_model(model, source, strict=True)
    model.decode_head.conv_seg = fold_temperature_into_conv(conv, calibrator)
    meta = plain_data(source.get('meta', {}) if isinstance(source, dict) else {}) or {}
    meta['calibseg_export'] = {'calibrator': calibrator.method, 'calibrator_file': calibrator_file,
                               'checkpoint': checkpoint, 'calibrator_describe': calibrator.describe(),
                               'calibrator_meta': plain_data(getattr(calibrator, 'meta', {}))}
    payload = {'meta': meta, 'state_dict': weights_to_cpu(model.state_dict())}
    check_output_path(out, inputs=inputs, force=force)
    atomic_torch_save(payload, out, overwrite=True)
    return payload


def load_exported_checkpoint(path: str) -> Dict[str, Any]:
    """Read an exported checkpoint back with torch's safe loader, checking that it is complete.

    Raises:
        ValueError: a truncated or foreign file, or one without ``meta['calibseg_export']`` and a ``state_dict`` of
            finite tensors.
    """
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as error:  # truncated zip archives and foreign pickles raise many types
        raise ValueError(f'{path}: not a readable exported checkpoint (truncated or foreign?): {error}') from error
    if not isinstance(payload, dict) or not isinstance(payload.get('state_dict'), dict) \
            or 'calibseg_export' not in (payload.get('meta') or {}):
        raise ValueError(f'{path}: not a calibseg exported checkpoint (no state_dict / meta.calibseg_export)')
    for key, tensor in payload['state_dict'].items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f'{path}: tensor {key} holds NaN or infinite values')
    return payload
