"""``CalibratedEncoderDecoder``: mmseg's ``EncoderDecoder`` whose test-time logits pass through a fitted calibrator.

Config (the calibrator file is written by ``tools/fit_calibrator.py``)::

    model = dict(type='CalibratedEncoderDecoder',
                 calibrator=dict(file='work_dirs/posthoc/.../calibrator.pth', method='ts'))

Where the calibrator acts. mmseg's test path is ``predict -> inference (whole / slide) -> encode_decode ->
decode_head.predict (forward, then predict_by_feat: bilinear resize to the padded input) -> postprocess_result``
(crop the padding, undo a test-time flip, bilinear resize to the original image, and a sigmoid for one-channel
heads). This class overrides ``encode_decode``::

    z = decode_head.forward(extract_feat(inputs))     # (N, K, h, w): logits at the head's native resolution
    z = calibrator(z)                                 # <- here, before any resize
    return decode_head.predict_by_feat(z, metas)      # mmseg's resize to the input, then postprocess_result

so the calibrated logits are what ``seg_logits``, ``pred_sem_seg`` and every metric see (``tools/test.py`` reports
the calibrated model). Consequences:

* **Local temperature scaling** runs its convolutions on the native logit map (1/4 of the input for DeepLabV3+'s
  decoder, 1/16 for the demo FCN), where ``tools/fit_calibrator.py`` fits it too (by default with the NLL taken
  after this class's resize, i.e. on the logits the metrics see); with ``use_image=True``
  it gets the normalised input image average-pooled to that size (:func:`image_at_logits_size`). ``T(x)`` is
  per native pixel; the bilinear upsampling of ``z / T`` that follows can move the arg-max at in-between pixels,
  so LTS may change the prediction slightly there. In ``slide`` mode each crop is calibrated on its own before
  the crops are averaged.
* **TS, CTS, VS** and the binary calibrators are per-class affine maps ``a_k z_k + c_k``; bilinear interpolation
  is a convex combination of neighbouring pixels, so they commute with every resize here: calibrating before or
  after mmseg's resizes gives the same logits (and fitting them on logits at label resolution is exact).
* **One-channel heads** (``out_channels == 1``): the binary calibrators act on the logit, before the sigmoid that
  ``postprocess_result`` applies (``seg_logits`` then holds calibrated probabilities, thresholded with the head's
  ``threshold``).
* ``forward(mode='tensor')`` returns the calibrated native logits; training (``loss``) is unchanged, so a
  calibrated config is meant for testing.

The calibrator is loaded from its file when the segmentor is built, with the file's method and class count
checked against the config and the decode head (clear errors at build time). It is deliberately **not** a
sub-module: its tensors stay out of ``state_dict()`` (the plain training checkpoint loads without missing keys,
and the calibrator has one source of truth, its file), out of ``parameters()`` (no optimiser touches it), and
it follows the logits' device on first use. Heads whose ``predict`` is not mmseg's ``forward`` +
``predict_by_feat`` (e.g. DA, Enc, MaskFormer heads) are rejected at build time.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, List, Optional

import torch
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import OptSampleList
from torch import Tensor

from ...calibrators import (
    BINARY_CALIBRATOR_ALIASES,
    CALIBRATOR_ALIASES,
    BaseCalibrator,
    LocalTemperatureScaling,
    image_at_logits_size,
    load_calibrator,
    resolve_calibrator_method,
)

__all__ = ['CalibratedEncoderDecoder', 'CALIBRATOR_ALIASES', 'BINARY_CALIBRATOR_ALIASES', 'resolve_calibrator_method',
           'image_at_logits_size']

_CALIBRATOR_KEYS = ('file', 'method')


def _check_decode_head(decode_head: Any) -> None:
    if isinstance(decode_head, torch.nn.ModuleList):
        raise ValueError('CalibratedEncoderDecoder needs a single decode head (use the cascade segmentor without '
                         'calibration)')
    if type(decode_head).predict is not BaseDecodeHead.predict:
        raise ValueError(f'CalibratedEncoderDecoder calibrates the logits between decode_head.forward() and '
                         f'predict_by_feat(); {type(decode_head).__name__} overrides predict(), so its logits '
                         'cannot be calibrated there')
    if not isinstance(getattr(decode_head, 'out_channels', None), int):
        raise ValueError(f'{type(decode_head).__name__} has no integer out_channels')


@MODELS.register_module()
class CalibratedEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` applying a fitted post-hoc calibrator to the decode head's logits at test time.

    See the module docstring for where the calibrator acts and why.

    Args:
        calibrator: ``dict(file=PATH, method=None)``: the calibrator file written by ``tools/fit_calibrator.py``
            (or :func:`calibseg.calibrators.save_calibrator`) and, optionally, the method the config expects
            (``'ts'``, ``'cts'``, ``'vs'``, ``'lts'``; ``'ts'``/``'tsb'`` for one-channel heads; or a class name),
            checked against the file.
        **kwargs: ``EncoderDecoder``'s arguments (backbone, decode_head, ..., data_preprocessor, init_cfg).

    Raises:
        ValueError: a missing or unknown ``calibrator`` key, a file that is not a calibrator, a method other
            than the expected one, or a calibrator for a different number of logit channels than the head's
            ``out_channels``.
        FileNotFoundError: the calibrator file does not exist.
    """

    def __init__(self, *, calibrator: Optional[Dict[str, Any]] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _check_decode_head(self.decode_head)
        spec = self._check_spec(calibrator)
        out_channels = self.decode_head.out_channels
        expected = None if spec.get('method') is None else resolve_calibrator_method(spec['method'], out_channels)
        path = osp.expanduser(str(spec['file']))
        if not osp.isfile(path):
            raise FileNotFoundError(f'calibrator file not found: {path} (model.calibrator.file). Fit one with '
                                    '`python tools/fit_calibrator.py CONFIG CHECKPOINT --method ...` or point '
                                    'model.calibrator.file at it (--cfg-options model.calibrator.file=...)')
        try:
            loaded = load_calibrator(path, expected_method=expected, expected_num_classes=out_channels)
        except ValueError as error:
            raise ValueError(f'model.calibrator.file cannot be used with this model '
                             f'({type(self.decode_head).__name__} with out_channels={out_channels}): '
                             f'{error}') from error
        if out_channels == 1 and loaded.method not in BINARY_CALIBRATOR_ALIASES.values():
            raise ValueError(f'{path} holds a {loaded.method} calibrator, which does not apply to a one-channel '
                             f'head; use {sorted(BINARY_CALIBRATOR_ALIASES.values())}')
        loaded.requires_grad_(False).eval()
        # a plain attribute, not a sub-module: kept out of state_dict(), parameters() and the optimiser
        object.__setattr__(self, 'calibrator', loaded)
        self.calibrator_file = path

    @staticmethod
    def _check_spec(calibrator: Any) -> Dict[str, Any]:
        if calibrator is None:
            raise ValueError("CalibratedEncoderDecoder needs calibrator=dict(file=..., method=...); for the "
                             "uncalibrated model use type='EncoderDecoder'")
        if not isinstance(calibrator, dict):
            raise ValueError(f'calibrator must be a dict(file=..., method=...), got {type(calibrator).__name__}')
        unknown = sorted(set(calibrator) - set(_CALIBRATOR_KEYS))
        if unknown:
            raise ValueError(f'unknown calibrator keys {unknown}; allowed: {list(_CALIBRATOR_KEYS)}')
        if not calibrator.get('file'):
            raise ValueError('calibrator.file is required (the path of a fitted calibrator)')
        return dict(calibrator)

    def calibrate_logits(self, seg_logits: Tensor, inputs: Tensor) -> Tensor:
        """Calibrate native-resolution logits ``(N, K, h, w)`` of the images ``inputs`` ``(N, C, H, W)``."""
        calibrator: BaseCalibrator = self.calibrator
        if calibrator._device != seg_logits.device:
            calibrator.to(seg_logits.device)
        if isinstance(calibrator, LocalTemperatureScaling):
            image = image_at_logits_size(inputs, seg_logits.shape[2:]) if calibrator.use_image else None
            return calibrator(seg_logits, image)
        return calibrator(seg_logits)

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """Calibrated logits resized to the input: ``predict_by_feat(calibrator(decode_head.forward(x)))``."""
        x = self.extract_feat(inputs)
        seg_logits = self.calibrate_logits(self.decode_head.forward(x), inputs)
        return self.decode_head.predict_by_feat(seg_logits, batch_img_metas)

    def _forward(self, inputs: Tensor, data_samples: OptSampleList = None) -> Tensor:
        """Calibrated logits at the decode head's native resolution (``mode='tensor'``)."""
        x = self.extract_feat(inputs)
        return self.calibrate_logits(self.decode_head.forward(x), inputs)
