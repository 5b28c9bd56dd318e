"""The one inference loop of calibseg, and how to build the model and the dataloader it runs on.

:func:`iter_seg_logits` runs a segmentor over a dataloader and yields, per image, the logits and the labels at one
of two resolutions:

* ``resolution='label'``: the logits exactly as mmseg's ``postprocess_result`` stores them in ``seg_logits``
  (the preprocessor's padding cut off, a test-time flip undone, bilinear resize to the original image) **but
  never passed through the sigmoid** of one-channel heads, against ``gt_sem_seg``. This is what mmseg's metrics
  see; whole and slide inference both go through the model's own ``inference``.
* ``resolution='native'``: the decode head's logit map ``decode_head.forward(extract_feat(x))`` (the input of
  ``predict_by_feat``; uncalibrated), one item per image and slide crop (mmseg's ``slide_inference`` grid), with
  the labels moved into the network input's frame (nearest resize to ``img_shape``, the flip, the padding marked
  ``ignore_index``) and either sampled at the logit pixels' centres (``native_labels='centre'``) or kept at the
  input's resolution (``native_labels='input'``, for a loss taken after mmseg's resize).

Post-hoc fitting (:mod:`calibseg.apis.posthoc`), the calibration study and the ASLP hook all use it.
"""
from __future__ import annotations

import copy
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..calibrators.local_temperature_scaling import image_at_logits_size
from ..utils.distributed import dist_info
from ..utils.validation import check_choice, check_positive_int

__all__ = ['SegLogits', 'Progress', 'iter_seg_logits', 'progress_printer', 'build_model', 'build_dataloader',
           'dataloader_key', 'plain_model_cfg', 'labels_in_input_frame', 'native_pieces', 'unwrap_model',
           'calibrated_inference']

Window = Tuple[int, int, int, int]


@dataclass
class SegLogits:
    """One image's logits and labels from :func:`iter_seg_logits`.

    Attributes:
        logits: ``(K, H, W)`` logits (pre-softmax / pre-sigmoid) on the model's device.
        labels: ``(H, W)`` int64 labels of the same size as ``logits`` (``native_labels='input'``: of the
            crop of the network input instead).
        index: the image's dataset index under calibseg's sequential sampler (``DefaultSampler(shuffle=False,
            round_up=False)``: process ``rank`` of ``world`` gets images ``rank, rank + world, ...``), i.e.
            ``rank + position * world``.
        meta: the sample's metainfo (``img_path``, ``ori_shape``, ``img_shape``, ...).
        batch: the number of the dataloader batch the image came in (0-based).
        window: ``(y1, y2, x1, x2)`` of the network input this item covers (the whole input, or a slide crop).
        image: with ``with_image=True`` (native resolution), the normalised input of the window average-pooled to
            the logits' size ``(C, H, W)`` (local temperature scaling's image input), else ``None``.
    """

    logits: Tensor
    labels: Tensor
    index: int
    meta: Dict[str, Any]
    batch: int
    window: Window
    image: Optional[Tensor] = None


@dataclass
class Progress:
    """Where an inference pass stands: ``images`` done by this process of ``total`` (``None`` if unknown)."""

    images: int
    total: Optional[int]
    seconds: float

    @property
    def rate(self) -> float:
        """Images per second so far."""
        return self.images / self.seconds if self.seconds > 0 else math.inf

    @property
    def remaining(self) -> Optional[float]:
        """Estimated seconds left (``None`` without a total)."""
        if self.total is None or self.images == 0:
            return None
        return max(self.total - self.images, 0) / self.rate if math.isfinite(self.rate) else 0.0


def progress_printer(prefix: str, *, every: int = 100, write: Optional[Callable[[str], Any]] = None
                     ) -> Callable[[Progress], None]:
    """A ``progress`` callback for :func:`iter_seg_logits` printing one line every ``every`` images and at the end.

    Example:
        >>> report = progress_printer('[fit] calib', every=2, write=print)
        >>> for done in (1, 2, 3, 4):
        ...     report(Progress(images=done, total=4, seconds=float(done)))
        [fit] calib: 2/4 images, 1.0 img/s, 2 s left
        [fit] calib: 4/4 images, 1.0 img/s, 0 s left
    """
    every = check_positive_int('every', every)
    state = {'next': every}

    def emit(text: str) -> None:
        if write is not None:
            write(text)
        else:
            print(text, file=sys.stdout, flush=True)

    def report(progress: Progress) -> None:
        last = progress.total is not None and progress.images >= progress.total
        if progress.images < state['next'] and not last:
            return
        while state['next'] <= progress.images:
            state['next'] += every
        total = '' if progress.total is None else f'/{progress.total}'
        left = '' if progress.remaining is None else f', {progress.remaining:.0f} s left'
        emit(f'{prefix}: {progress.images}{total} images, {progress.rate:.1f} img/s{left}')
        if last:
            state['next'] = math.inf

    return report


# ------------------------------------------------------------------------------------------------ frames
def _padding(meta: Dict[str, Any]) -> List[int]:
    """(left, right, top, bottom) padding that the data preprocessor added (mmseg's ``postprocess_result`` key)."""
    pad = meta.get('img_padding_size', meta.get('padding_size', None))
    return [int(p) for p in pad] if pad is not None else [0, 0, 0, 0]


def _unflip(x: Tensor, meta: Dict[str, Any]) -> Tensor:
    if not meta.get('flip'):
        return x
    return x.flip(dims=(-1,)) if meta.get('flip_direction') == 'horizontal' else x.flip(dims=(-2,))


def _label_resolution(seg: Tensor, metas: Sequence[Dict[str, Any]], align_corners: bool) -> List[Tensor]:
    """Per image, ``(K, H0, W0)`` logits as ``postprocess_result`` computes them (without the sigmoid)."""
    out = []
    _, _, h, w = seg.shape
    for i, meta in enumerate(metas):
        left, right, top, bottom = _padding(meta)
        z = _unflip(seg[i:i + 1, :, top:h - bottom, left:w - right], meta)
        z = F.interpolate(z, size=tuple(meta['ori_shape'][:2]), mode='bilinear', align_corners=align_corners)
        out.append(z[0])
    return out


def labels_in_input_frame(label: Tensor, meta: Dict[str, Any], size: Sequence[int], ignore_index: int) -> Tensor:
    """Ground truth ``(H0, W0)`` moved into the network input's frame ``size``: nearest resize to ``img_shape``,
    the test-time flip, and the preprocessor's padding filled with ``ignore_index``.

    Example:
        >>> label = torch.tensor([[1, 2], [3, 4]])
        >>> labels_in_input_frame(label, dict(img_shape=(2, 2), padding_size=[0, 1, 0, 0]), (2, 3), 255)
        tensor([[  1,   2, 255],
                [  3,   4, 255]])
    """
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


def native_pieces(model: nn.Module, inputs: Tensor) -> Iterator[Tuple[Tensor, Tensor, Window]]:
    """``(native logits, input window, (y1, y2, x1, x2))``: the whole input, or each crop of mmseg's ``slide``
    inference grid (``test_cfg.mode == 'slide'``, ``stride`` and ``crop_size``)."""
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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The segmentor inside a model wrapper (DDP and mmengine's wrappers keep it as ``.module``)."""
    from mmengine.model import is_model_wrapper

    return model.module if is_model_wrapper(model) else model


@contextmanager
def calibrated_inference(model: nn.Module, calibrator: Optional[nn.Module]) -> Iterator[nn.Module]:
    """Within the block, ``model``'s inference applies ``calibrator`` to the decode head's native logits before
    ``predict_by_feat`` (what :class:`~calibseg.models.segmentors.CalibratedEncoderDecoder` does); ``None``: no
    change."""
    if calibrator is None:
        yield model
        return
    from ..calibrators import LocalTemperatureScaling

    def encode_decode(inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        z = model.decode_head.forward(model.extract_feat(inputs))
        if isinstance(calibrator, LocalTemperatureScaling):
            image = image_at_logits_size(inputs, z.shape[2:]) if calibrator.use_image else None
            z = calibrator(z, image)
        else:
            z = calibrator(z)
        return model.decode_head.predict_by_feat(z, batch_img_metas)

    model.encode_decode = encode_decode  # an instance attribute shadows the method
    try:
        yield model
    finally:
        del model.encode_decode


def _total_images(dataloader: Any) -> Optional[int]:
    for owner in (getattr(dataloader, 'sampler', None), getattr(dataloader, 'dataset', None)):
        if owner is None:
            continue
        try:
            return len(owner)
        except TypeError:
            continue
    return None


def iter_seg_logits(model: nn.Module, dataloader: Any, *, resolution: str = 'label', native_labels: str = 'centre',
                    with_image: bool = False, ignore_index: Optional[int] = None,
                    calibrator: Optional[nn.Module] = None,
                    progress: Optional[Callable[[Progress], None]] = None) -> Iterator[SegLogits]:
    """Run ``model`` over ``dataloader`` (under ``torch.no_grad``) and yield every image's logits and labels.

    See the module docstring for the two resolutions. The model is run batch by batch exactly as
    ``model.test_step`` runs it (its ``data_preprocessor``, then ``inference``: whole or slide).

    Args:
        model: an mmseg ``EncoderDecoder`` (or subclass) in eval mode; a model wrapper is unwrapped.
        dataloader: yields mmseg batches (``dict(inputs=[...], data_samples=[...])``) with ``gt_sem_seg``.
        resolution: ``'label'`` or ``'native'``.
        native_labels: ``'centre'`` (labels at the logit pixels' centres) or ``'input'`` (labels in the input
            frame, of the window's size); native resolution only.
        with_image: native resolution: also yield the normalised input image at the logits' size.
        ignore_index: the label value of the padding (native resolution); default the decode head's (or 255).
        calibrator: label resolution: apply this fitted calibrator to the native logits inside the model's
            inference, as ``CalibratedEncoderDecoder`` does (``None``: the model's own logits).
        progress: called with a :class:`Progress` after every batch (e.g. :func:`progress_printer`).

    Yields:
        :class:`SegLogits`, one per image (per image and slide crop at native resolution), in dataloader order.

    Example (a tiny untrained FCN on one random 32 x 32 image):
        >>> from mmengine.config import ConfigDict
        >>> from mmengine.registry import init_default_scope
        >>> from mmengine.structures import PixelData
        >>> from mmseg.registry import MODELS
        >>> from mmseg.structures import SegDataSample
        >>> init_default_scope('mmseg')
        >>> model = MODELS.build(dict(
        ...     type='EncoderDecoder', data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32)),
        ...     backbone=dict(type='ResNetV1c', depth=18, out_indices=(3,), dilations=(1, 1, 2, 4),
        ...                   strides=(1, 2, 1, 1)),
        ...     decode_head=dict(type='FCNHead', in_channels=512, channels=8, num_convs=1, num_classes=3,
        ...                      in_index=0, concat_input=False),
        ...     test_cfg=ConfigDict(mode='whole'))).eval()
        >>> sample = SegDataSample(metainfo=dict(ori_shape=(32, 32), img_shape=(32, 32)),
        ...                        gt_sem_seg=PixelData(data=torch.randint(0, 3, (1, 32, 32))))
        >>> batches = [dict(inputs=[torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)], data_samples=[sample])]
        >>> for item in iter_seg_logits(model, batches):
        ...     print(tuple(item.logits.shape), tuple(item.labels.shape), item.index)
        (3, 32, 32) (32, 32) 0
        >>> item = next(iter_seg_logits(model, batches, resolution='native', with_image=True))
        >>> tuple(item.logits.shape), tuple(item.labels.shape), tuple(item.image.shape)
        ((3, 4, 4), (4, 4), (3, 4, 4))
    """
    check_choice('resolution', resolution, ('label', 'native'))
    check_choice('native_labels', native_labels, ('centre', 'input'))
    if calibrator is not None and resolution != 'label':
        raise ValueError('calibrator= applies to resolution=\'label\' (native logits are the head\'s own output)')
    module = unwrap_model(model)
    if ignore_index is None:
        ignore_index = int(getattr(module.decode_head, 'ignore_index', 255))
    return _iterate(module, dataloader, resolution=resolution, native_labels=native_labels, with_image=with_image,
                    ignore_index=ignore_index, calibrator=calibrator, progress=progress)


@torch.no_grad()  # as a decorator of a generator: gradients are off only while it runs, not between items
def _iterate(module: nn.Module, dataloader: Any, *, resolution: str, native_labels: str, with_image: bool,
             ignore_index: int, calibrator: Optional[nn.Module],
             progress: Optional[Callable[[Progress], None]]) -> Iterator[SegLogits]:
    align_corners = bool(getattr(module, 'align_corners', False))
    rank, world = dist_info()
    total = _total_images(dataloader)
    position = 0
    start = time.time()
    for number, batch in enumerate(dataloader):
        data = module.data_preprocessor(batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        metas = [s.metainfo for s in samples]
        labels = []
        for sample in samples:
            if 'gt_sem_seg' not in sample:
                raise ValueError(f'{sample.metainfo.get("img_path", "a sample")} has no gt_sem_seg: the '
                                 'dataloader must load the annotations (LoadAnnotations in its pipeline)')
            y = sample.gt_sem_seg.data
            labels.append((y[0] if y.dim() == 3 else y).long())
        if resolution == 'label':
            with calibrated_inference(module, calibrator):
                seg = module.inference(inputs, [dict(m) for m in metas])
            for n, z in enumerate(_label_resolution(seg, metas, align_corners)):
                yield SegLogits(logits=z, labels=labels[n].to(z.device), index=rank + (position + n) * world,
                                meta=metas[n], batch=number, window=(0, seg.shape[2], 0, seg.shape[3]))
        else:
            frame = torch.stack([labels_in_input_frame(y.to(inputs.device), m, inputs.shape[2:], ignore_index)
                                 for y, m in zip(labels, metas)])
            for z, window, (y1, y2, x1, x2) in native_pieces(module, inputs):
                if native_labels == 'input':
                    y = frame[:, y1:y2, x1:x2]
                else:
                    y = F.interpolate(frame[:, None, y1:y2, x1:x2].float(), size=z.shape[2:],
                                      mode='nearest-exact')[:, 0].long()
                image = image_at_logits_size(window, z.shape[2:]) if with_image else None
                for n in range(z.shape[0]):
                    yield SegLogits(logits=z[n], labels=y[n], index=rank + (position + n) * world,
                                    meta=metas[n], batch=number, window=(y1, y2, x1, x2),
                                    image=None if image is None else image[n])
        position += len(samples)
        if progress is not None:
            progress(Progress(images=position, total=total, seconds=time.time() - start))


# ------------------------------------------------------------------------------------------- model and data
def plain_model_cfg(model_cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Turn a post-hoc config's ``CalibratedEncoderDecoder`` model dict into the plain ``EncoderDecoder`` (in
    place) and return its ``calibrator`` entry (``None`` if the model is not a calibrated one)."""
    if model_cfg.get('type') != 'CalibratedEncoderDecoder':
        return None
    spec = dict(model_cfg.pop('calibrator', None) or {})
    model_cfg['type'] = 'EncoderDecoder'
    return spec


def build_model(cfg: Any, checkpoint: str, *, device: str = 'cpu', weights_only: bool = False,
                plain: bool = False) -> nn.Module:
    """The segmentor of ``cfg`` with the weights of ``checkpoint``, in eval mode on ``device``.

    Every key of the checkpoint's ``state_dict`` must match the model (``strict=True``): a config that does not
    fit the checkpoint (another head width, class count, backbone) fails here instead of running with some layers
    left at their random initialisation and giving silently wrong numbers. SyncBN layers are reverted to BN (the
    model runs in one process per device, in eval mode, where both compute the same thing). ``init_weights()`` is
    not called (no pretrained download). The checkpoint's ``meta`` is kept as ``model.checkpoint_meta``.

    Args:
        cfg: an mmengine ``Config`` (or a config path); its ``custom_imports`` and ``default_scope`` are applied.
        checkpoint: the checkpoint file. Loaded with full unpickling as a trusted file (as ``tools/test.py``),
            or with ``weights_only=True`` by torch's safe loader (files of unknown origin).
        device: where the model runs.
        weights_only: use torch's safe loader.
        plain: build the uncalibrated ``EncoderDecoder`` of a post-hoc (``CalibratedEncoderDecoder``) config.

    Example::

        model = build_model('configs/posthoc/fcn_r18-d16_ce-ts_1xb8-600it_demo-voc12aug-96x96.py',
                            'work_dirs/compare/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96/iter_600.pth', plain=True)
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmengine.utils import import_modules_from_strings
    from mmseg.registry import MODELS

    from ..compat import trusted

    if isinstance(cfg, str):
        cfg = Config.fromfile(cfg)
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = copy.deepcopy(cfg.model)
    if plain:
        plain_model_cfg(model_cfg)
    model = MODELS.build(model_cfg)
    ckpt = load_checkpoint(model, checkpoint if weights_only else trusted(checkpoint), map_location='cpu',
                           strict=True, logger='current')
    model = revert_sync_batchnorm(model)
    model.checkpoint_meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    return model.to(device).eval()


def dataloader_key(cfg: Any, split: Optional[str] = None) -> str:
    """The config key of a split: ``split`` or ``<split>_dataloader``; by default ``calib_dataloader`` when the
    config has one (the post-hoc configs), else ``val_dataloader``.

    Example:
        >>> cfg = {'val_dataloader': {'dataset': {}}, 'test_dataloader': {'dataset': {}}}
        >>> dataloader_key(cfg), dataloader_key(cfg, 'test')
        ('val_dataloader', 'test_dataloader')
    """
    if split is None:
        return 'calib_dataloader' if cfg.get('calib_dataloader') else 'val_dataloader'
    key = split if split.endswith('_dataloader') else f'{split}_dataloader'
    if not cfg.get(key):
        known = sorted(k for k in cfg.keys() if str(k).endswith('_dataloader') and cfg.get(k))
        raise ValueError(f'--split {split}: the config has no {key} (it has {known})')
    return key


def build_dataloader(loader_cfg: Dict[str, Any], *, seed: int = 0, num_workers: Optional[int] = None) -> Any:
    """A dataloader over every image of ``loader_cfg``'s dataset, once each, in order.

    The sampler is replaced by ``DefaultSampler(shuffle=False, round_up=False)``: in one process every image in
    dataset order (the passes of a fit see the same images in the same order); under a distributed launcher
    process ``rank`` gets images ``rank, rank + world, ...`` without padding (each image exactly once).

    Args:
        loader_cfg: a dataloader config (``dataset``, ``batch_size``, ``num_workers``, ...).
        seed: the dataloader's worker seed.
        num_workers: override the config's workers (0 also turns ``persistent_workers`` off).

    Example::

        cfg = Config.fromfile('configs/posthoc/fcn_r18-d16_ce-ts_1xb8-600it_demo-voc12aug-96x96.py')
        loader = build_dataloader(cfg[dataloader_key(cfg)])           # calib_dataloader, each image once, in order
        items = iter_seg_logits(build_model(cfg, checkpoint, plain=True), loader)
    """
    from mmengine.runner import Runner

    loader_cfg = copy.deepcopy(dict(loader_cfg))
    if 'dataset' not in loader_cfg:
        raise ValueError('the dataloader config has no dataset')
    loader_cfg.pop('batch_sampler', None)
    loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=False, round_up=False)
    if num_workers is not None:
        loader_cfg['num_workers'] = num_workers
    if not loader_cfg.get('num_workers'):
        loader_cfg['persistent_workers'] = False
    return Runner.build_dataloader(loader_cfg, seed=seed)
