"""Fit a post-hoc calibrator (TS, CTS, VS, LTS; binary TS / TS+bias) of a trained segmentor and write its file.

    python tools/fit_calibrator.py CONFIG CHECKPOINT [--method ts|cts|vs|lts|tsb] [--split calib|val|...]
        [--out FILE] [--max-pixels-per-image N] [--seed S] [--resolution auto|label|native]
        [--lts-loss input|native] [--no-cache]
        [--calibrator-cfg k=v ...] [--fit-cfg k=v ...] [--device cpu|cuda] [--weights-only] [--cfg-options ...]

CONFIG is the training config or a post-hoc config (``model.type='CalibratedEncoderDecoder'``; its calibrator is
stripped, the uncalibrated network is fitted, and ``--method`` / ``--out`` default to the config's
``model.calibrator.method`` / ``.file``, so ``tools/test.py`` with the same config then finds the file).
Without a post-hoc config, ``--method`` is required and the file goes next to the checkpoint
(``<dir>/<checkpoint stem>_calib-<method>.pth``). The checkpoint named here is loaded as a trusted file, as in
``tools/test.py`` (``--weights-only`` for files of unknown origin).

Split: the dataloader config ``<split>_dataloader``; by default ``calib_dataloader`` when the config has one (the
post-hoc configs define it on images that neither training nor their test split uses), else ``val_dataloader``.
Its sampler is replaced by a sequential one (fitting makes several passes over the same pixels).

Resolution (``--resolution auto``):

* ``ts``, ``cts``, ``vs``, ``tsb``: **label resolution**, the logits exactly as mmseg's metrics see them (resized
  to the original image like ``postprocess_result``, before any sigmoid) against the full-resolution labels.
  These calibrators are per-class affine maps, which commute with the bilinear resizes, so this fits the
  evaluated objective exactly.
* ``lts``: **native resolution**, the decode head's logit map, where ``CalibratedEncoderDecoder`` applies it.
  The labels are brought into the input frame (nearest resize to the resized image, padding marked ignored).
  ``--lts-loss input`` (default): ``T(x)`` is computed on the native logits and the NLL is taken after the
  bilinear resize of ``z / T`` to the input, exactly the test-time path, over every labelled pixel
  (:func:`fit_lts_through_resize`). ``--lts-loss native``: ``LocalTemperatureScaling.fit`` on the native logits
  against the labels sampled at each logit pixel's centre (``nearest-exact``), i.e. 1/64 (output stride 8) or
  1/256 (stride 16) of the labelled pixels; on the demo data it generalised worse (see configs/posthoc/README.md).
  ``--resolution native`` also works for the other methods (labels at the logit pixels' centres: fewer pixels).

Memory. The network runs once and the selected data stay in memory (float32): for label/native-resolution
pixels at most ``images * max_pixels_per_image * (4 K + 8)`` bytes (``--max-pixels-per-image``, default 10000,
drawn without replacement from the labelled pixels with a ``torch.Generator`` seeded by ``--seed``; ``0`` keeps
every pixel); for LTS the native logit maps, ``images * K * h * w * 4`` bytes (1/64 of the full-resolution logits
at output stride 8), plus the input-frame labels (one byte per input pixel) for ``--lts-loss input``.
``--no-cache`` re-runs the network on every pass of the optimiser instead (memory of one batch, time of a network
pass per optimiser pass). LTS's Adam steps once per dataloader batch.

Printed: the fitted parameters, and ECE_15 (ECE_10 for one-channel heads), NLL, Brier and accuracy on the fitted
pixels before and after calibration (in-sample: evaluate on a separate split with ``tools/test.py``).
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import os.path as osp
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.calibrators import (
    BaseCalibrator,
    ClasswiseTemperatureScaling,
    LocalTemperatureScaling,
    VectorScaling,
    build_calibrator,
    save_calibrator,
)
from calibseg.compat import trusted
from calibseg.functional.calibration import (
    BinaryCalibrationStatistics,
    CalibrationStatistics,
    calibration_metrics,
)
from calibseg.models.segmentors import (
    BINARY_CALIBRATOR_ALIASES,
    CALIBRATOR_ALIASES,
    image_at_logits_size,
    resolve_calibrator_method,
)

METHODS = sorted(set(CALIBRATOR_ALIASES) | set(BINARY_CALIBRATOR_ALIASES))
Item = Tuple[Tensor, ...]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='training config, or a post-hoc config (CalibratedEncoderDecoder)')
    parser.add_argument('checkpoint', help='checkpoint of the trained network')
    parser.add_argument('--method', choices=METHODS,
                        help='ts, cts, vs, lts (multi-class heads); ts, tsb (one-channel heads). Default: the '
                             "post-hoc config's model.calibrator.method")
    parser.add_argument('--split', help='dataloader to fit on: NAME or NAME_dataloader (default: calib_dataloader '
                                        'if the config has one, else val_dataloader)')
    parser.add_argument('--out', help="calibrator file (default: the post-hoc config's model.calibrator.file, "
                                      'else <checkpoint dir>/<checkpoint stem>_calib-<method>.pth)')
    parser.add_argument('--max-pixels-per-image', type=int, default=10000,
                        help='labelled pixels kept per image for ts/cts/vs/tsb (0: all; default 10000)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the pixel sub-sampling')
    parser.add_argument('--resolution', choices=['auto', 'label', 'native'], default='auto',
                        help='auto: label resolution for ts/cts/vs/tsb, native for lts')
    parser.add_argument('--lts-loss', choices=['input', 'native'], default='input',
                        help='lts: NLL after the bilinear resize to the input against the input-frame labels '
                             '(default), or at the native logit pixels against labels sampled there')
    parser.add_argument('--no-cache', action='store_true',
                        help='re-run the network on every optimiser pass instead of keeping the data in memory')
    parser.add_argument('--calibrator-cfg', nargs='+', action=DictAction, default={},
                        help='constructor arguments of the calibrator, e.g. use_image=True hidden_channels=8')
    parser.add_argument('--fit-cfg', nargs='+', action=DictAction, default={},
                        help='arguments of fit(), e.g. epochs=20 lr=0.005 for lts')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--weights-only', action='store_true',
                        help="load the checkpoint with torch's safe loader (weights_only=True)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    args = parser.parse_args(argv)
    if args.max_pixels_per_image < 0:
        parser.error('--max-pixels-per-image must be >= 0')
    return args


# --------------------------------------------------------------------------------------------- config and model
def plain_model_cfg(cfg: Config) -> Optional[Dict[str, Any]]:
    """Turn a post-hoc config's model into the plain ``EncoderDecoder`` (in place); return its calibrator dict."""
    if cfg.model.get('type') != 'CalibratedEncoderDecoder':
        return None
    spec = dict(cfg.model.pop('calibrator', None) or {})
    cfg.model.type = 'EncoderDecoder'
    return spec


def dataloader_key(cfg: Config, split: Optional[str]) -> str:
    """The config key of the split to fit on (see the module docstring)."""
    if split is None:
        return 'calib_dataloader' if cfg.get('calib_dataloader') else 'val_dataloader'
    key = split if split.endswith('_dataloader') else f'{split}_dataloader'
    if not cfg.get(key):
        known = sorted(k for k in cfg.keys() if k.endswith('_dataloader') and cfg.get(k))
        raise ValueError(f'--split {split}: the config has no {key} (it has {known})')
    return key


def build_loader(cfg: Config, key: str, seed: int) -> Any:
    """The split's dataloader with a sequential sampler (the passes must see the same images in the same order)."""
    loader_cfg = copy.deepcopy(cfg[key])
    if 'dataset' not in loader_cfg:
        raise ValueError(f'{key} has no dataset')
    loader_cfg.pop('batch_sampler', None)
    loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=False)
    if not loader_cfg.get('num_workers'):
        loader_cfg['persistent_workers'] = False
    return Runner.build_dataloader(loader_cfg, seed=seed)


def build_model(cfg: Config, checkpoint: str, *, weights_only: bool, device: str) -> Any:
    """The uncalibrated segmentor with the checkpoint's weights, in eval mode (SyncBN reverted to BN)."""
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint if weights_only else trusted(checkpoint), map_location='cpu',
                    strict=False, logger='current')
    model = revert_sync_batchnorm(model)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------- logit sources
def _padding(meta: Dict[str, Any]) -> List[int]:
    """(left, right, top, bottom) padding that the data preprocessor added (mmseg's ``postprocess_result`` key)."""
    pad = meta.get('img_padding_size', meta.get('padding_size', None))
    return [int(p) for p in pad] if pad is not None else [0, 0, 0, 0]


def _unflip(x: Tensor, meta: Dict[str, Any]) -> Tensor:
    if not meta.get('flip'):
        return x
    return x.flip(dims=(-1,)) if meta.get('flip_direction') == 'horizontal' else x.flip(dims=(-2,))


def logits_at_label_resolution(model: Any, inputs: Tensor, metas: List[dict]) -> List[Tensor]:
    """Per image, uncalibrated logits ``(K, H0, W0)`` exactly as ``postprocess_result`` stores them (no sigmoid)."""
    seg = model.inference(inputs, [dict(m) for m in metas])
    out = []
    _, _, h, w = seg.shape
    for i, meta in enumerate(metas):
        left, right, top, bottom = _padding(meta)
        z = _unflip(seg[i:i + 1, :, top:h - bottom, left:w - right], meta)
        z = resize(z, size=meta['ori_shape'], mode='bilinear', align_corners=model.align_corners, warning=False)
        out.append(z[0])
    return out


def labels_in_input_frame(label: Tensor, meta: Dict[str, Any], size: Sequence[int], ignore_index: int) -> Tensor:
    """Ground truth ``(H0, W0)`` moved into the network input's frame ``size``: nearest resize to ``img_shape``,
    the test-time flip, and the preprocessor's padding filled with ``ignore_index``."""
    img_h, img_w = (int(s) for s in meta['img_shape'][:2])
    y = label[None, None].float()
    if tuple(y.shape[2:]) != (img_h, img_w):
        y = F.interpolate(y, size=(img_h, img_w), mode='nearest-exact')
    y = _unflip(y, meta)
    left, right, top, bottom = _padding(meta)
    y = F.pad(y, (left, right, top, bottom), value=float(ignore_index))
    if tuple(y.shape[2:]) != tuple(size):
        raise ValueError(f'labels in the input frame have size {tuple(y.shape[2:])} but the input is {tuple(size)} '
                         f'({meta.get("img_path", "an image")}: img_shape {meta["img_shape"]}, padding '
                         f'{_padding(meta)})')
    return y[0, 0].long()


def native_pieces(model: Any, inputs: Tensor) -> Iterator[Tuple[Tensor, Tensor, Tuple[int, int, int, int]]]:
    """``(native logits, input window, (y1, y2, x1, x2))``: the whole input, or each crop in ``slide`` mode."""
    if model.test_cfg.get('mode', 'whole') != 'slide':
        h, w = inputs.shape[2:]
        yield model.decode_head.forward(model.extract_feat(inputs)), inputs, (0, h, 0, w)
        return
    h_stride, w_stride = model.test_cfg.stride
    h_crop, w_crop = model.test_cfg.crop_size
    h_img, w_img = inputs.shape[2:]
    for h_idx in range(max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1):
        for w_idx in range(max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1):  # mmseg's slide_inference grid
            y2, x2 = min(h_idx * h_stride + h_crop, h_img), min(w_idx * w_stride + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop = inputs[:, :, y1:y2, x1:x2]
            yield model.decode_head.forward(model.extract_feat(crop)), crop, (y1, y2, x1, x2)


def select_pixels(z: Tensor, y: Tensor, *, ignore_index: int, max_pixels: int,
                  generator: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Flat ``(P, K)`` float32 logits and ``(P,)`` labels of (at most ``max_pixels``) labelled pixels."""
    z = z.reshape(z.shape[0], -1)
    y = y.reshape(-1)
    idx = (y != ignore_index).nonzero().squeeze(1)
    if max_pixels and idx.numel() > max_pixels:
        pick = torch.randperm(idx.numel(), generator=generator)[:max_pixels].to(idx.device)
        idx = idx[pick].sort().values
    return z[:, idx].t().float().cpu().contiguous(), y[idx].long().cpu()


class LogitSource:
    """Re-iterable source of calibration data from a segmentor on a dataloader (see the module docstring).

    Items: ``(z (P, K), y (P,))`` per image for pixel calibrators, or ``(z (N, K, h, w), y[, image])`` per batch
    (and slide crop) for LTS, with ``y`` sampled at the logit pixels' centres ``(N, h, w)``, or, with
    ``input_labels=True``, the labels in the input frame ``(N, H, W)`` (uint8). Each iteration re-creates the
    sub-sampling generator from ``seed``, so re-running the network (``cache=False``) yields the same pixels.
    """

    def __init__(self, model: Any, loader: Any, *, native: bool, maps: bool, use_image: bool, ignore_index: int,
                 max_pixels: int, seed: int, cache: bool, input_labels: bool = False) -> None:
        self.model, self.loader = model, loader
        self.native, self.maps, self.use_image = native, maps, use_image
        self.input_labels = input_labels
        self.ignore_index, self.max_pixels, self.seed = ignore_index, max_pixels, seed
        self.cache = cache
        self._items: Optional[List[Item]] = None
        self.num_images = 0
        self.network_passes = 0

    def __iter__(self) -> Iterator[Item]:
        if not self.cache:
            return self._generate()
        if self._items is None:
            self._items = list(self._generate())
        return iter(self._items)

    @torch.no_grad()
    def _generate(self) -> Iterator[Item]:
        generator = torch.Generator().manual_seed(self.seed)
        self.network_passes += 1
        images = 0
        for batch in self.loader:
            data = self.model.data_preprocessor(batch, False)
            inputs, samples = data['inputs'], data['data_samples']
            metas = [s.metainfo for s in samples]
            images += len(samples)
            labels = [s.gt_sem_seg.data[0] for s in samples]
            if not self.native:
                for z, y in zip(logits_at_label_resolution(self.model, inputs, metas), labels):
                    yield select_pixels(z, y.to(z.device), ignore_index=self.ignore_index,
                                        max_pixels=self.max_pixels, generator=generator)
                continue
            frame = torch.stack([labels_in_input_frame(y.to(inputs.device), m, inputs.shape[2:], self.ignore_index)
                                 for y, m in zip(labels, metas)])
            for z, window, (y1, y2, x1, x2) in native_pieces(self.model, inputs):
                if self.maps and self.input_labels:
                    y = frame[:, y1:y2, x1:x2].to(torch.uint8)  # labels are 0..255
                else:
                    y = F.interpolate(frame[:, None, y1:y2, x1:x2].float(), size=z.shape[2:], mode='nearest-exact')
                    y = y[:, 0].long()
                if self.maps:
                    item: Item = (z.float().cpu(), y.cpu())
                    if self.use_image:
                        item += (image_at_logits_size(window, z.shape[2:]).float().cpu(),)
                    yield item
                else:
                    for n in range(z.shape[0]):
                        yield select_pixels(z[n], y[n], ignore_index=self.ignore_index,
                                            max_pixels=self.max_pixels, generator=generator)
        self.num_images = images


# ----------------------------------------------------------------------------------------------- fit and report
def evaluate(source: LogitSource, calibrator: Optional[BaseCalibrator], *, num_channels: int, ignore_index: int,
             threshold: Optional[float], align_corners: bool = False) -> Dict[str, float]:
    """ECE (15 bins; 10 for one-channel heads), NLL, Brier and accuracy of the source's pixels (calibrated or not);
    native logit maps paired with input-frame labels are resized to them first, as ``predict_by_feat`` does."""
    if num_channels == 1:
        stats: CalibrationStatistics = BinaryCalibrationStatistics(
            input_type='logits', threshold=threshold or 0.5, ignore_index=ignore_index, classwise=False)
    else:
        stats = CalibrationStatistics(num_channels, input_type='logits', ignore_index=ignore_index,
                                      classwise=False)
    device = calibrator._device if calibrator is not None else torch.device('cpu')
    with torch.no_grad():
        for item in source:
            z, y = item[0].to(device), item[1].to(device).long()
            if calibrator is not None:
                z = calibrator(z, item[2].to(device) if len(item) > 2 else None) \
                    if isinstance(calibrator, LocalTemperatureScaling) else calibrator(z)
            if z.dim() == 4 and tuple(z.shape[2:]) != tuple(y.shape[1:]):
                z = resize(z, size=y.shape[1:], mode='bilinear', align_corners=align_corners)
            if num_channels == 1:
                z = z[:, 0]
            stats.update(z.float().cpu(), y.cpu())
    keys = calibration_metrics(stats, metrics=['ECE', 'NLL', 'Brier', 'Acc'], bins=(10, 15))
    return {k: keys[k] for k in ('ECE', 'NLL', 'Brier', 'Acc')}


def fitted_parameters(calibrator: BaseCalibrator, classes: Sequence[str]) -> str:
    """Readable fitted values (per class for CTS and VS)."""
    if isinstance(calibrator, ClasswiseTemperatureScaling):
        rows = [f'  {name:>16s}  T = {t:.4f}' for name, t in zip(classes, calibrator.temperature.tolist())]
        return 'per-class temperatures:\n' + '\n'.join(rows)
    if isinstance(calibrator, VectorScaling):
        rows = [f'  {name:>16s}  w = {w:.4f}  b = {b:+.4f}'
                for name, w, b in zip(classes, calibrator.weight.tolist(), calibrator.bias.tolist())]
        return 'per-class scale and bias:\n' + '\n'.join(rows)
    return calibrator.describe()


def _plain(value: Any) -> Any:
    """``value`` reduced to what a calibrator file's meta accepts (plain data); other values become None."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return None


def default_out(checkpoint: str, method: str) -> str:
    stem = osp.splitext(osp.basename(checkpoint))[0]
    return osp.join(osp.dirname(checkpoint) or '.', f'{stem}_calib-{method}.pth')


def fit_lts_through_resize(calibrator: LocalTemperatureScaling, source: LogitSource, *, ignore_index: int,
                           align_corners: bool = False, epochs: int = 10, lr: float = 1e-2,
                           weight_decay: float = 0.0) -> LocalTemperatureScaling:
    """Fit LTS as ``CalibratedEncoderDecoder`` applies it: ``T(x)`` on the native logits, the loss after the resize.

    Adam, one step per item of ``source`` (native logits ``z`` with the labels ``y`` in the input frame): the mean
    NLL over the labelled input pixels of ``softmax(resize(z / T(z)))``, ``resize`` being ``predict_by_feat``'s
    bilinear upsampling. Same optimiser, defaults and ``fit_info`` keys as ``LocalTemperatureScaling.fit``
    (which fits against labels sampled at the native pixels, ``--lts-loss native``); this objective uses every
    labelled pixel and is the one the test metrics measure.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f'epochs must be an integer >= 1, got {epochs!r}')
    optimizer = torch.optim.Adam(calibrator.parameters(), lr=float(lr), weight_decay=float(weight_decay))
    device = calibrator._device
    epoch_nll: List[float] = []
    steps = pixels = images = 0
    t_sum, t_count, t_min, t_max = 0.0, 0, math.inf, -math.inf
    for epoch in range(epochs):
        loss_sum, pixels, images = 0.0, 0, 0
        for item in source:
            z, y = item[0].to(device), item[1].to(device).long()
            image = item[2].to(device) if len(item) > 2 else None
            images += z.shape[0]
            count = int((y != ignore_index).sum())
            if count == 0:
                continue
            temperature = calibrator.temperature_map(z, image)
            calibrated = resize(z / temperature, size=y.shape[1:], mode='bilinear', align_corners=align_corners)
            loss = F.cross_entropy(calibrated, y, ignore_index=ignore_index, reduction='sum') / count
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            loss_sum += float(loss.detach()) * count
            pixels += count
            if epoch == epochs - 1:
                t = temperature.detach()
                t_sum, t_count = t_sum + float(t.double().sum()), t_count + t.numel()
                t_min, t_max = min(t_min, float(t.min())), max(t_max, float(t.max()))
        if pixels == 0:
            raise ValueError(f'the calibration split has no labelled pixels (all ignore_index={ignore_index})')
        epoch_nll.append(loss_sum / pixels)
    calibrator.is_fitted.fill_(True)
    calibrator.fit_info = {'num_pixels': pixels, 'num_images': images, 'epochs': epochs, 'steps': steps,
                           'epoch_nll': epoch_nll, 'temperature_mean': t_sum / t_count,
                           'temperature_min': t_min, 'temperature_max': t_max, 'loss': 'input'}
    return calibrator


def fit_calibrator(model: Any, loader: Any, method: str, *, resolution: str = 'auto', max_pixels: int = 10000,
                   seed: int = 0, cache: bool = True, calibrator_cfg: Optional[Dict[str, Any]] = None,
                   fit_cfg: Optional[Dict[str, Any]] = None, device: str = 'cpu', lts_loss: str = 'input'
                   ) -> Dict[str, Any]:
    """Fit ``method`` to the uncalibrated ``model`` (eval mode, on ``device``) over ``loader`` (mmseg batches).

    Returns:
        ``{'calibrator', 'method' (class name), 'resolution', 'before', 'after' (metrics on the fitted pixels),
        'source' (the :class:`LogitSource`), 'fit_seconds', 'ignore_index'}``.
    """
    channels = int(model.decode_head.out_channels)
    class_name = resolve_calibrator_method(method, channels)
    is_lts = class_name == LocalTemperatureScaling.__name__
    resolution = resolution if resolution != 'auto' else ('native' if is_lts else 'label')
    if is_lts and resolution != 'native':
        raise ValueError('local temperature scaling is applied to the native logits (CalibratedEncoderDecoder): '
                         'it is fitted at --resolution native')
    calibrator_cfg = dict(calibrator_cfg or {})
    if channels > 1:
        calibrator_cfg.setdefault('num_classes', channels)
    calibrator = build_calibrator(class_name, calibrator_cfg).to(device)
    ignore_index = int(getattr(model.decode_head, 'ignore_index', 255))
    threshold = getattr(model.decode_head, 'threshold', None)
    if lts_loss not in ('input', 'native'):
        raise ValueError(f"lts_loss must be 'input' or 'native', got {lts_loss!r}")
    resized_loss = is_lts and lts_loss == 'input'
    source = LogitSource(model, loader, native=resolution == 'native', maps=is_lts,
                         use_image=bool(getattr(calibrator, 'use_image', False)), ignore_index=ignore_index,
                         max_pixels=0 if is_lts else max_pixels, seed=seed, cache=cache, input_labels=resized_loss)
    align_corners = bool(getattr(model, 'align_corners', False))
    options = dict(num_channels=channels, ignore_index=ignore_index, threshold=threshold, align_corners=align_corners)
    before = evaluate(source, None, **options)
    start = time.time()
    if resized_loss:
        fit_lts_through_resize(calibrator, source, ignore_index=ignore_index, align_corners=align_corners,
                               **dict(fit_cfg or {}))
    else:
        calibrator.fit(source, ignore_index=ignore_index if is_lts else None, **dict(fit_cfg or {}))
    fit_seconds = time.time() - start
    after = evaluate(source, calibrator, **options)
    return {'calibrator': calibrator, 'method': class_name, 'resolution': resolution, 'before': before,
            'after': after, 'source': source, 'fit_seconds': fit_seconds, 'ignore_index': ignore_index,
            'lts_loss': lts_loss if is_lts else None}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    posthoc = plain_model_cfg(cfg)
    method = args.method or (posthoc or {}).get('method')
    if method is None:
        raise ValueError('--method is required (ts, cts, vs, lts; ts or tsb for one-channel heads) unless CONFIG '
                         'is a post-hoc config with model.calibrator.method')
    out = args.out
    if out is None and posthoc is not None:
        if posthoc.get('method') is not None and posthoc['method'] != method:
            raise ValueError(f"--method {method} differs from the config's model.calibrator.method "
                             f"{posthoc['method']!r}: pass --out (the config's file would not match)")
        out = posthoc.get('file')
    out = out or default_out(args.checkpoint, method)
    key = dataloader_key(cfg, args.split)

    model = build_model(cfg, args.checkpoint, weights_only=args.weights_only, device=args.device)
    channels = int(model.decode_head.out_channels)
    resolve_calibrator_method(method, channels)  # fail before the data pass
    loader = build_loader(cfg, key, args.seed)
    classes = list(loader.dataset.metainfo.get('classes') or [str(k) for k in range(max(channels, 2))])
    print(f'[fit_calibrator] {method} on {key} ({len(loader.dataset)} images), device {args.device}'
          f"{', no cache' if args.no_cache else ''}", flush=True)
    start = time.time()
    result = fit_calibrator(model, loader, method, resolution=args.resolution, max_pixels=args.max_pixels_per_image,
                            seed=args.seed, cache=not args.no_cache, calibrator_cfg=args.calibrator_cfg,
                            fit_cfg=args.fit_cfg, device=args.device, lts_loss=args.lts_loss)
    calibrator, source, before, after = result['calibrator'], result['source'], result['before'], result['after']
    is_lts = isinstance(calibrator, LocalTemperatureScaling)
    info = calibrator.fit_info
    pixels = 'all' if is_lts or not args.max_pixels_per_image else f'at most {args.max_pixels_per_image}'
    print(f"[fit_calibrator] {result['method']} fitted in {result['fit_seconds']:.1f} s at {result['resolution']} "
          f"resolution ({pixels} labelled pixels per image: {info.get('num_pixels', '?')} pixels of "
          f'{source.num_images} images; {source.network_passes} network pass(es))')
    print(fitted_parameters(calibrator, classes))
    head = 'ECE_10' if channels == 1 else 'ECE_15'
    print(f'on the fitted pixels ({key}, in-sample):')
    print(f"  {'':8s} {head + ' (%)':>12s} {'NLL':>8s} {'Brier':>8s} {'Acc (%)':>8s}")
    for name, m in (('before', before), ('after', after)):
        print(f"  {name:8s} {m['ECE']:12.3f} {m['NLL']:8.4f} {m['Brier']:8.4f} {m['Acc']:8.2f}")

    meta = {'config': args.config, 'checkpoint': args.checkpoint, 'split': key, 'method': method,
            'resolution': result['resolution'], 'lts_loss': result['lts_loss'],
            'max_pixels_per_image': 0 if is_lts else args.max_pixels_per_image,
            'seed': args.seed, 'num_images': source.num_images, 'classes': classes,
            'ignore_index': result['ignore_index'], 'fit_metrics': {'before': before, 'after': after},
            'fit_info': _plain(info), 'calibrator_cfg': _plain(dict(args.calibrator_cfg)),
            'fit_cfg': _plain(dict(args.fit_cfg)), 'fit_seconds': result['fit_seconds'],
            'total_seconds': time.time() - start,
            'command': ' '.join(['tools/fit_calibrator.py', *argv] if argv is not None else sys.argv)}
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    save_calibrator(out, calibrator, meta=meta)
    print(f'[fit_calibrator] wrote {out}')
    return dict(result, file=out)


if __name__ == '__main__':
    main()
