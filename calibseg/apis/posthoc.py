"""Post-hoc calibration of a trained segmentor: fit a calibrator on a split, evaluate it, write its file.

:func:`fit_calibrator` fits TS, CTS, VS, LTS (multi-class heads) or binary TS / TS+bias (one-channel heads) from
a config and a checkpoint, or from a model and a dataloader you built; :func:`evaluate_calibrator` measures a
fitted calibrator on a split. Both run the network through :func:`~calibseg.apis.iter_seg_logits`.

Resolution (``resolution='auto'``):

* ``ts``, ``cts``, ``vs``, ``tsb``: **label resolution**, the logits exactly as mmseg's metrics see them (resized
  to the original image like ``postprocess_result``, before any sigmoid) against the full-resolution labels.
  These calibrators are per-class affine maps, which commute with the bilinear resizes, so this fits the
  evaluated objective exactly.
* ``lts``: **native resolution**, the decode head's logit map, where ``CalibratedEncoderDecoder`` applies it.
  ``lts_loss='input'`` (default): ``T(x)`` is computed on the native logits and the NLL is taken after the
  bilinear resize of ``z / T`` to the network input, against the labels in the input frame, exactly the
  test-time path, over every labelled pixel (``LocalTemperatureScaling.fit(loss_resolution='labels')``).
  ``lts_loss='native'``: the NLL at the native logits against the labels sampled at each logit pixel's centre,
  i.e. 1/64 (output stride 8) or 1/256 (stride 16) of the labelled pixels.
  ``resolution='native'`` also works for the other methods (labels at the logit pixels' centres: fewer pixels).

Memory. The network runs once and the selected data stay in memory (float32, ``cache=True``): at most
``images * max_pixels_per_image * (4 K + 8)`` bytes for the pixel calibrators (``max_pixels_per_image`` labelled
pixels per image drawn without replacement with a ``torch.Generator`` seeded by ``seed``; ``None`` or 0 keeps
every pixel); for LTS the native logit maps, ``images * K * h * w * 4`` bytes, plus the input-frame labels (one
byte per input pixel) with ``lts_loss='input'``. ``cache=False`` re-runs the network on every pass of the
optimiser instead (memory of one batch). LTS's Adam steps once per dataloader batch.
"""
from __future__ import annotations

import os.path as osp
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..calibrators import (
    BaseCalibrator,
    ClasswiseTemperatureScaling,
    LocalTemperatureScaling,
    VectorScaling,
    build_calibrator,
    resolve_calibrator_method,
    save_calibrator,
    select_pixels,
)
from .inference import Progress, build_dataloader, build_model, dataloader_key, iter_seg_logits, plain_model_cfg

__all__ = ['LogitSource', 'fit_calibrator', 'evaluate_calibrator', 'fitted_parameters', 'default_out',
           'check_output_path', 'pixel_metrics', 'format_fit_report']

Item = Tuple[Tensor, ...]


class LogitSource:
    """Re-iterable source of calibration data from a segmentor on a dataloader (see the module docstring).

    Items: ``(z (P, K), y (P,))`` per image for pixel calibrators (``maps=False``; at most ``max_pixels``
    labelled pixels per image, :func:`~calibseg.calibrators.select_pixels`), or ``(z (N, K, h, w), y[, image])``
    per dataloader batch and slide crop for LTS (``maps=True``, native resolution), with ``y`` at the logit
    pixels' centres ``(N, h, w)`` or, with ``native_labels='input'``, in the input frame ``(N, H, W)`` (uint8).
    Each iteration re-creates the subsampling generator from ``seed``, so re-running the network
    (``cache=False``) yields the same pixels.
    """

    def __init__(self, model: nn.Module, dataloader: Any, *, resolution: str = 'label', maps: bool = False,
                 native_labels: str = 'centre', use_image: bool = False, ignore_index: int = 255,
                 max_pixels: Optional[int] = None, seed: int = 0, cache: bool = True,
                 progress: Optional[Callable[[Progress], None]] = None) -> None:
        if maps and resolution != 'native':
            raise ValueError('logit maps (local temperature scaling) are taken at native resolution')
        self.model, self.dataloader = model, dataloader
        self.resolution, self.maps, self.native_labels, self.use_image = resolution, maps, native_labels, use_image
        self.ignore_index, self.max_pixels, self.seed = ignore_index, max_pixels or None, seed
        self.cache = cache
        self.progress = progress
        self._items: Optional[List[Item]] = None
        self.num_images = 0
        self.network_passes = 0

    def __iter__(self) -> Iterator[Item]:
        if not self.cache:
            return self._generate()
        if self._items is None:
            self._items = list(self._generate())
        return iter(self._items)

    def _logits(self) -> Iterator[Any]:
        return iter_seg_logits(self.model, self.dataloader, resolution=self.resolution,
                               native_labels=self.native_labels, with_image=self.maps and self.use_image,
                               ignore_index=self.ignore_index, progress=self.progress)

    def _generate(self) -> Iterator[Item]:
        generator = torch.Generator().manual_seed(self.seed)
        self.network_passes += 1
        images = set()
        if not self.maps:
            for item in self._logits():
                images.add(item.index)
                z, y = select_pixels(item.logits, item.labels, ignore_index=self.ignore_index,
                                     max_pixels=self.max_pixels, generator=generator)
                yield z.float().cpu().contiguous(), y.cpu()
        else:
            group: List[Any] = []
            for item in self._logits():
                images.add(item.index)
                if group and (group[0].batch, group[0].window) != (item.batch, item.window):
                    yield self._stack(group)
                    group = []
                group.append(item)
            if group:
                yield self._stack(group)
        self.num_images = len(images)

    def _stack(self, group: List[Any]) -> Item:
        z = torch.stack([g.logits for g in group]).float().cpu()
        y = torch.stack([g.labels for g in group])
        y = y.to(torch.uint8).cpu() if self.native_labels == 'input' else y.long().cpu()  # labels are 0..255
        if self.use_image:
            return z, y, torch.stack([g.image for g in group]).float().cpu()
        return z, y


# ------------------------------------------------------------------------------------------------- metrics
def pixel_metrics(source: Any, calibrator: Optional[BaseCalibrator], *, num_channels: int, ignore_index: int,
                  threshold: Optional[float] = None, align_corners: bool = False) -> Dict[str, float]:
    """ECE (15 bins; 10 for one-channel heads), NLL, Brier and accuracy (percent for ECE and Acc) of a
    :class:`LogitSource`'s pixels, calibrated or not; native logit maps paired with input-frame labels are resized
    to them first, as ``predict_by_feat`` does."""
    from ..functional.calibration import BinaryCalibrationStatistics, CalibrationStatistics, calibration_metrics

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
                z = F.interpolate(z, size=y.shape[1:], mode='bilinear', align_corners=align_corners)
            if num_channels == 1:
                z = z[:, 0]
            stats.update(z.float().cpu(), y.cpu())
    keys = calibration_metrics(stats, metrics=['ECE', 'NLL', 'Brier', 'Acc'], bins=(10, 15))
    return {k: keys[k] for k in ('ECE', 'NLL', 'Brier', 'Acc')}


def fitted_parameters(calibrator: BaseCalibrator, classes: Sequence[str]) -> str:
    """Readable fitted values (per class for CTS and VS), e.g. for a log.

    Example:
        >>> from calibseg.calibrators import TemperatureScaling
        >>> ts = TemperatureScaling(num_classes=2).fit(torch.tensor([[2., 0.], [0., 2.]]), torch.tensor([0, 1]))
        >>> fitted_parameters(ts, ['a', 'b']).startswith("num_classes=2, method='nll', T=")
        True
    """
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


# ------------------------------------------------------------------------------------------------- outputs
def default_out(checkpoint: str, method: str) -> str:
    """``<checkpoint dir>/<checkpoint stem>_calib-<method>.pth``.

    Example:
        >>> default_out('work_dirs/run/iter_600.pth', 'cts')
        'work_dirs/run/iter_600_calib-cts.pth'
    """
    stem = osp.splitext(osp.basename(checkpoint))[0]
    return osp.join(osp.dirname(checkpoint) or '.', f'{stem}_calib-{method}.pth')


def _same_file(a: str, b: str) -> bool:
    if osp.exists(a) and osp.exists(b):
        return osp.samefile(a, b)
    return osp.realpath(a) == osp.realpath(b)


def check_output_path(out: str, *, inputs: Sequence[str], force: bool) -> None:
    """Refuse to write ``out`` when it is one of the ``inputs`` (never, even with ``force``) or already exists
    (unless ``force``).

    Raises:
        ValueError: ``out`` is an input file.
        FileExistsError: ``out`` exists and ``force`` is false.
    """
    for path in inputs:
        if path and _same_file(out, path):
            raise ValueError(f'the output {out} is an input of this command ({path}); refusing to overwrite it '
                             '(even with --force): choose another output path')
    if osp.exists(out) and not force:
        raise FileExistsError(f'{out} exists; refusing to overwrite it without --force (force=True)')


# ------------------------------------------------------------------------------------------------- fitting
def _load_config(config: Any, cfg_options: Optional[Dict[str, Any]]) -> Any:
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(config) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return cfg


def fit_calibrator(method: Optional[str] = None, *, model: Optional[nn.Module] = None, dataloader: Any = None,
                   config: Any = None, checkpoint: Optional[str] = None, split: Optional[str] = None,
                   cfg_options: Optional[Dict[str, Any]] = None, resolution: str = 'auto',
                   max_pixels_per_image: Optional[int] = 10000, seed: int = 0, cache: bool = True,
                   calibrator_cfg: Optional[Dict[str, Any]] = None, fit_cfg: Optional[Dict[str, Any]] = None,
                   lts_loss: str = 'input', device: str = 'cpu', weights_only: bool = False,
                   out: Optional[str] = None, force: bool = False, meta: Optional[Dict[str, Any]] = None,
                   progress: Optional[Callable[[Progress], None]] = None) -> Dict[str, Any]:
    """Fit a post-hoc calibrator to an uncalibrated segmentor (see the module docstring for the protocol).

    Either ``model`` (eval mode, on ``device``) and ``dataloader`` (mmseg batches, a fixed order), or ``config``
    (a training or post-hoc config, path or ``Config``) and ``checkpoint``: the model is then built with
    :func:`~calibseg.apis.build_model` (``plain=True``: a post-hoc config's calibrator is stripped) and the split
    ``split`` (default ``calib_dataloader`` if the config has one, else ``val_dataloader``) with
    :func:`~calibseg.apis.build_dataloader`; ``method`` defaults to the post-hoc config's
    ``model.calibrator.method`` and the file is always written, by default to the config's
    ``model.calibrator.file`` (so testing the same config finds it) or next to the checkpoint
    (:func:`default_out`).

    Args:
        method: ``ts``, ``cts``, ``vs``, ``lts`` (multi-class heads), ``ts``, ``tsb`` (one-channel heads), or a
            calibrator class name.
        model, dataloader: a built model and its data.
        config, checkpoint, split, cfg_options, weights_only: build them from a config instead.
        resolution: ``'auto'``, ``'label'`` or ``'native'``.
        max_pixels_per_image: labelled pixels kept per image for the pixel calibrators (``None``/0: all).
        seed: seed of the pixel subsampling.
        cache: keep the data in memory (else re-run the network on every optimiser pass).
        calibrator_cfg: constructor arguments of the calibrator (``num_classes`` is the head's).
        fit_cfg: arguments of the calibrator's ``fit`` (e.g. ``epochs``, ``lr`` for LTS).
        lts_loss: ``'input'`` or ``'native'`` (LTS only).
        device: where the model (and the calibrator) run.
        out: the calibrator file to write (atomically). With a model and a dataloader nothing is written unless
            ``out`` is given.
        force: overwrite an existing ``out`` (never the checkpoint or the config).
        meta: extra entries for the file's ``meta``.
        progress: an inference progress callback (:func:`~calibseg.apis.progress_printer`).

    Returns:
        ``{'calibrator', 'method' (class name), 'resolution', 'lts_loss', 'before', 'after' (ECE, NLL, Brier,
        Acc on the fitted pixels, in-sample), 'source' (the :class:`LogitSource`), 'fit_seconds',
        'ignore_index', 'num_images', 'classes', 'file' (or None), 'meta'}`` (and ``'split'`` from a config).

    Example (the demo's TS file, as ``python tools/fit_calibrator.py CONFIG CHECKPOINT`` writes it)::

        run = 'work_dirs/compare/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96'
        result = fit_calibrator(config='configs/posthoc/fcn_r18-d16_ce-ts_1xb8-600it_demo-voc12aug-96x96.py',
                                checkpoint=f'{run}/iter_600.pth')
        result['calibrator'].temperature, result['before']['ECE'], result['after']['ECE'], result['file']
    """
    split_key = None
    cfg = None
    inputs: List[str] = []
    if model is None:
        if config is None or checkpoint is None or dataloader is not None:
            raise ValueError('fit_calibrator needs either model= and dataloader=, or config= and checkpoint=')
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
        cfg = _load_config(config, cfg_options)
        posthoc = plain_model_cfg(cfg.model.copy()) or {}
        method = method or posthoc.get('method')
        if method is None:
            raise ValueError('--method is required (ts, cts, vs, lts; ts or tsb for one-channel heads) unless '
                             'CONFIG is a post-hoc config with model.calibrator.method')
        if out is None and posthoc:
            if posthoc.get('method') is not None and posthoc['method'] != method:
                raise ValueError(f"--method {method} differs from the config's model.calibrator.method "
                                 f"{posthoc['method']!r}: pass --out (the config's file would not match)")
            out = posthoc.get('file')
        out = out or default_out(checkpoint, method)
        inputs = [checkpoint] + ([config] if isinstance(config, str) else [])
        check_output_path(out, inputs=inputs, force=force)
        split_key = dataloader_key(cfg, split)
        model = build_model(cfg, checkpoint, device=device, weights_only=weights_only, plain=True)
        resolve_calibrator_method(method, int(model.decode_head.out_channels))  # fail before the data pass
        dataloader = build_dataloader(cfg[split_key], seed=seed)
    elif dataloader is None or config is not None or checkpoint is not None:
        raise ValueError('fit_calibrator needs either model= and dataloader=, or config= and checkpoint=')
    elif out is not None:
        check_output_path(out, inputs=[], force=force)
    if method is None:
        raise ValueError('method is required with model= and dataloader=')

    channels = int(model.decode_head.out_channels)
    class_name = resolve_calibrator_method(method, channels)
    is_lts = class_name == LocalTemperatureScaling.__name__
    resolution = resolution if resolution != 'auto' else ('native' if is_lts else 'label')
    if resolution not in ('label', 'native'):
        raise ValueError(f"resolution must be 'auto', 'label' or 'native', got {resolution!r}")
    if is_lts and resolution != 'native':
        raise ValueError('local temperature scaling is applied to the native logits (CalibratedEncoderDecoder): '
                         'it is fitted at --resolution native')
    if lts_loss not in ('input', 'native'):
        raise ValueError(f"lts_loss must be 'input' or 'native', got {lts_loss!r}")
    calibrator_cfg = dict(calibrator_cfg or {})
    if channels > 1:
        calibrator_cfg.setdefault('num_classes', channels)
    calibrator = build_calibrator(class_name, calibrator_cfg).to(device)
    ignore_index = int(getattr(model.decode_head, 'ignore_index', 255))
    threshold = getattr(model.decode_head, 'threshold', None)
    resized_loss = is_lts and lts_loss == 'input'
    source = LogitSource(model, dataloader, resolution=resolution, maps=is_lts,
                         native_labels='input' if resized_loss else 'centre',
                         use_image=bool(getattr(calibrator, 'use_image', False)), ignore_index=ignore_index,
                         max_pixels=None if is_lts else max_pixels_per_image, seed=seed, cache=cache,
                         progress=progress)
    align_corners = bool(getattr(model, 'align_corners', False))
    options = dict(num_channels=channels, ignore_index=ignore_index, threshold=threshold, align_corners=align_corners)
    before = pixel_metrics(source, None, **options)
    start = time.time()
    fit_options = dict(fit_cfg or {})
    if resized_loss:
        calibrator.fit(source, ignore_index=ignore_index, loss_resolution='labels', align_corners=align_corners,
                       **fit_options)
    else:
        calibrator.fit(source, ignore_index=ignore_index if is_lts else None, **fit_options)
    fit_seconds = time.time() - start
    after = pixel_metrics(source, calibrator, **options)
    dataset = getattr(dataloader, 'dataset', None)
    metainfo = getattr(dataset, 'metainfo', None) or {}
    classes = list(metainfo.get('classes') or [str(k) for k in range(max(channels, 2))])
    result = {'calibrator': calibrator, 'method': class_name, 'resolution': resolution,
              'lts_loss': lts_loss if is_lts else None, 'before': before, 'after': after, 'source': source,
              'fit_seconds': fit_seconds, 'ignore_index': ignore_index, 'num_images': source.num_images,
              'classes': classes, 'file': None, 'split': split_key}
    file_meta = {'config': config if isinstance(config, str) else None, 'checkpoint': checkpoint,
                 'split': split_key, 'method': method, 'resolution': resolution, 'lts_loss': result['lts_loss'],
                 'max_pixels_per_image': 0 if is_lts else (max_pixels_per_image or 0), 'seed': seed,
                 'num_images': source.num_images, 'classes': classes, 'ignore_index': ignore_index,
                 'fit_metrics': {'before': before, 'after': after}, 'fit_info': _plain(calibrator.fit_info),
                 'calibrator_cfg': _plain(calibrator_cfg), 'fit_cfg': _plain(fit_options),
                 'fit_seconds': fit_seconds}
    file_meta.update(_plain(dict(meta or {})))
    result['meta'] = file_meta
    if out is not None:
        check_output_path(out, inputs=inputs, force=force)  # again: the fit may have taken a while
        save_calibrator(out, calibrator, meta=file_meta, overwrite=True)
        result['file'] = out
    return result


def format_fit_report(result: Dict[str, Any]) -> str:
    """The lines ``tools/fit_calibrator.py`` prints for a :func:`fit_calibrator` result."""
    calibrator, source = result['calibrator'], result['source']
    info = calibrator.fit_info
    meta = result['meta']
    max_pixels = meta['max_pixels_per_image']
    pixels = 'all' if not max_pixels else f'at most {max_pixels}'
    head = 'ECE_10' if calibrator.num_classes == 1 else 'ECE_15'
    lines = [f"[fit_calibrator] {result['method']} fitted in {result['fit_seconds']:.1f} s at "
             f"{result['resolution']} resolution ({pixels} labelled pixels per image: "
             f"{info.get('num_pixels', '?')} pixels of {source.num_images} images; {source.network_passes} "
             'network pass(es))',
             fitted_parameters(calibrator, result['classes']),
             f"on the fitted pixels ({result.get('split') or 'the dataloader'}, in-sample):",
             f"  {'':8s} {head + ' (%)':>12s} {'NLL':>8s} {'Brier':>8s} {'Acc (%)':>8s}"]
    for name in ('before', 'after'):
        m = result[name]
        lines.append(f"  {name:8s} {m['ECE']:12.3f} {m['NLL']:8.4f} {m['Brier']:8.4f} {m['Acc']:8.2f}")
    if result.get('file'):
        lines.append(f"[fit_calibrator] wrote {result['file']}")
    return '\n'.join(lines)


def evaluate_calibrator(calibrator: BaseCalibrator, *, model: Optional[nn.Module] = None, dataloader: Any = None,
                        config: Any = None, checkpoint: Optional[str] = None, split: Optional[str] = 'test',
                        cfg_options: Optional[Dict[str, Any]] = None, device: str = 'cpu',
                        weights_only: bool = False, progress: Optional[Callable[[Progress], None]] = None
                        ) -> Dict[str, Dict[str, float]]:
    """ECE (15 bins; 10 for one-channel heads), NLL, Brier and accuracy of a model before and after ``calibrator``
    on every labelled pixel of a split, at label resolution (the pixels mmseg's metrics see).

    The calibrated logits are computed as :class:`~calibseg.models.segmentors.CalibratedEncoderDecoder` computes
    them (the calibrator on the decode head's native logits, then mmseg's resizes), so the result equals testing
    the post-hoc config; two network passes.

    Args:
        calibrator: a fitted calibrator (e.g. :func:`~calibseg.calibrators.load_calibrator`).
        model, dataloader: a built uncalibrated model (eval mode) and its data; or
        config, checkpoint, split, cfg_options, weights_only: build them (``split`` default ``'test'``).
        device: where the model runs.
        progress: an inference progress callback.

    Returns:
        ``{'uncalibrated': {...}, 'calibrated': {...}}`` with keys ``ECE``, ``NLL``, ``Brier``, ``Acc``.

    Example::

        metrics = evaluate_calibrator(load_calibrator('ts.pth'), config=config, checkpoint=checkpoint)
        metrics['uncalibrated']['ECE'], metrics['calibrated']['ECE']
    """
    if model is None:
        if config is None or checkpoint is None:
            raise ValueError('evaluate_calibrator needs either model= and dataloader=, or config= and checkpoint=')
        cfg = _load_config(config, cfg_options)
        model = build_model(cfg, checkpoint, device=device, weights_only=weights_only, plain=True)
        dataloader = build_dataloader(cfg[dataloader_key(cfg, split)])
    elif dataloader is None:
        raise ValueError('evaluate_calibrator needs a dataloader with the model')
    channels = int(model.decode_head.out_channels)
    if calibrator.num_classes != channels:
        raise ValueError(f'the calibrator has num_classes={calibrator.num_classes} but the model\'s head has '
                         f'{channels} channels')
    calibrator = calibrator.to(device).eval()
    ignore_index = int(getattr(model.decode_head, 'ignore_index', 255))
    options = dict(num_channels=channels, ignore_index=ignore_index,
                   threshold=getattr(model.decode_head, 'threshold', None))
    out = {}
    for name, cal in (('uncalibrated', None), ('calibrated', calibrator)):
        items = ((item.logits[None], item.labels[None]) for item in
                 iter_seg_logits(model, dataloader, calibrator=cal, ignore_index=ignore_index, progress=progress))
        out[name] = pixel_metrics(_Once(items), None, **options)
    return out


class _Once:
    """An iterable over an iterator, for :func:`pixel_metrics` (one pass)."""

    def __init__(self, iterator: Iterator[Item]) -> None:
        self.iterator = iterator

    def __iter__(self) -> Iterator[Item]:
        return self.iterator

