"""Fold a fitted TS, CTS or VS calibrator into the decode head's classifier and write a plain mmseg checkpoint.

    python tools/export_calibrated_checkpoint.py CONFIG CHECKPOINT CALIBRATOR OUT [--weights-only]
        [--cfg-options k=v ...]

The calibrated logit ``k`` of a per-class affine calibrator is ``a_k z_k + c_k`` (TS: ``a_k = 1/T``; CTS:
``1/T_k``; VS: ``w_k`` and ``c_k = b_k``; the binary calibrators likewise on one channel). Since
``z = conv_seg(x) = W x + b``, the exported ``decode_head.conv_seg`` has weights ``a_k W_k`` and bias
``a_k b_k + c_k`` (:func:`calibseg.calibrators.fold_temperature_into_conv`), so the **uncalibrated** config
(``EncoderDecoder``) loaded with OUT gives the calibrated logits, with no calibseg component at test time.
Local temperature scaling depends on the pixel and cannot be folded (use its ``CalibratedEncoderDecoder``
config). CONFIG may be the training config or a post-hoc config (its calibrator entry is ignored).

OUT holds ``{'meta': ..., 'state_dict': ...}``: the network's weights and the checkpoint's plain-data meta
(dataset classes, config text, ...) plus ``meta['calibseg_export']`` (calibrator, source files). Everything in it
is plain data, so it also loads with ``torch.load(weights_only=True)`` (``tools/test.py --weights-only``).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
from typing import Any, Dict, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model, weights_to_cpu
from mmseg.registry import MODELS
from torch import nn

from calibseg.calibrators import LocalTemperatureScaling, fold_temperature_into_conv, load_calibrator
from calibseg.compat import trusted


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='training config (or a post-hoc config) of the checkpoint')
    parser.add_argument('checkpoint', help='checkpoint of the trained network')
    parser.add_argument('calibrator', help='calibrator file written by tools/fit_calibrator.py (TS, CTS, VS)')
    parser.add_argument('out', help='the exported checkpoint')
    parser.add_argument('--weights-only', action='store_true',
                        help="load the checkpoint with torch's safe loader (weights_only=True)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    return parser.parse_args(argv)


def plain_data(value: Any) -> Any:
    """``value`` without what ``torch.load(weights_only=True)`` rejects (non-plain objects are dropped)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        items = [plain_data(v) for v in value]
        return type(value)(v for v in items if v is not _DROP)
    if isinstance(value, dict):
        out = {k: plain_data(v) for k, v in value.items() if isinstance(k, (str, int))}
        return {k: v for k, v in out.items() if v is not _DROP}
    return _DROP


_DROP = object()


def export(cfg: Config, checkpoint: str, calibrator_file: str, out: str, *, weights_only: bool = False
           ) -> Dict[str, Any]:
    """Build the plain model of ``cfg``, load ``checkpoint``, fold the calibrator into ``decode_head.conv_seg``
    and write ``out``; return the written dict.

    Raises:
        ValueError: an LTS calibrator, a head without a ``Conv2d`` ``conv_seg``, or a calibrator whose number of
            channels differs from the head's.
    """
    model_cfg = cfg.model.copy()
    if model_cfg.get('type') == 'CalibratedEncoderDecoder':
        model_cfg.pop('calibrator', None)
        model_cfg['type'] = 'EncoderDecoder'
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
    meta = plain_data(source.get('meta', {}) if isinstance(source, dict) else {})
    meta['calibseg_export'] = {'calibrator': calibrator.method, 'calibrator_file': calibrator_file,
                               'checkpoint': checkpoint, 'calibrator_describe': calibrator.describe(),
                               'calibrator_meta': plain_data(getattr(calibrator, 'meta', {}))}
    payload = {'meta': meta, 'state_dict': weights_to_cpu(model.state_dict())}
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    torch.save(payload, out)
    return payload


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    for path in (args.checkpoint, args.calibrator):
        if not osp.isfile(path):
            raise FileNotFoundError(f'file not found: {path}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    payload = export(cfg, args.checkpoint, args.calibrator, args.out, weights_only=args.weights_only)
    print(f"[export] folded {payload['meta']['calibseg_export']['calibrator_describe']} into "
          f'decode_head.conv_seg; wrote {args.out} (test it with the uncalibrated config)')


if __name__ == '__main__':
    main()
