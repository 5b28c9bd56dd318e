"""The soft saliency target through a pipeline: a bilinear resize and the packing into the data sample.

``LoadBinaryAnnotations(soft=True)`` puts the grey-level mask ``grey / 255`` into ``results['gt_soft_mask']``
and lists it in ``seg_fields``, so flips and crops (mmcv's ``RandomFlip``, mmseg's ``RandomCrop``) move it with
the label map. Resizes are the one kind of transform that must treat it differently from a label map: a label map
is resized by nearest neighbour, the soft mask bilinearly (the ASLP reference resizes its grey masks with
torchvision's bilinear ``Resize`` before ``ToTensor``). :class:`SoftMaskResize` does that; :class:`PackSaliencyInputs`
packs the result as ``data_sample.gt_soft_mask`` and refuses a soft mask that another resize touched.

Pipeline::

    train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations', soft=True),
                      dict(type='SoftMaskResize', scale=(384, 384), keep_ratio=False),
                      dict(type='RandomFlip', prob=0.5), dict(type='PackSaliencyInputs')]

Not covered: transforms that interpolate label maps by nearest neighbour without a trace in ``results`` (mmseg's
``RandomRotate``) would rotate the soft mask by nearest neighbour too; ``Pad`` pads it with the label pad value
(those pixels are ignored through the label map anyway).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import mmcv
import numpy as np
import torch
from mmcv.transforms import Resize
from mmengine.structures import PixelData
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS
from PIL import Image

from .load_binary_annotations import SOFT_MASK_KEY, SOFT_MASK_SCALE_KEY

__all__ = ['SoftMaskResize', 'PackSaliencyInputs']


def _as_scale(value) -> Optional[Tuple[int, ...]]:
    """A ``scale`` record in a comparable form (tuples of ints; ``None`` stays ``None``)."""
    if value is None:
        return None
    return tuple(int(v) for v in value)


@TRANSFORMS.register_module()
class SoftMaskResize(Resize):
    """mmcv's ``Resize``, with the soft saliency mask (``gt_soft_mask``) resized bilinearly.

    Everything else is mmcv's ``Resize`` (the image with ``interpolation``, label maps by nearest neighbour);
    without a soft mask in ``results`` it is exactly ``Resize``. The soft mask is resized with the same size rule
    as the image (``imrescale``'s size with ``keep_ratio``, else ``scale``), so the two stay aligned, with the
    image's ``backend`` (cv2's bilinear; with ``backend='pillow'`` Pillow's bilinear on a float image, antialiased
    when shrinking, as the reference's torchvision resize), and clipped to ``[0, 1]`` (bilinear weights are
    convex: the clip only removes rounding). Use it for
    ``RandomResize`` too: ``RandomResize(..., resize_type='SoftMaskResize')``.

    Args:
        as mmcv's ``Resize`` (``scale``, ``scale_factor``, ``keep_ratio``, ``clip_object_border``, ``backend``,
        ``interpolation``).
    """

    def _resize_seg(self, results: dict) -> None:
        fields = list(results.get('seg_fields', []))
        soft = results.get(SOFT_MASK_KEY) if SOFT_MASK_KEY in fields else None
        results['seg_fields'] = [key for key in fields if key != SOFT_MASK_KEY]
        try:
            super()._resize_seg(results)
        finally:
            results['seg_fields'] = fields
        if soft is None:
            return
        height, width = soft.shape[:2]
        # the image's size rule: imrescale's rescale_size with keep_ratio, else the scale itself
        size = mmcv.rescale_size((width, height), results['scale']) if self.keep_ratio else results['scale']
        soft = np.ascontiguousarray(soft, dtype=np.float32)
        if self.backend == 'pillow':  # mmcv's pillow resize takes uint8 only; Pillow's own 'F' mode keeps floats
            resized = np.asarray(Image.fromarray(soft).resize(tuple(size), Image.BILINEAR))
        else:
            resized = mmcv.imresize(soft, tuple(size), interpolation='bilinear', backend=self.backend)
        results[SOFT_MASK_KEY] = np.clip(resized.astype(np.float32, copy=False), 0.0, 1.0)
        results[SOFT_MASK_SCALE_KEY] = results['scale']


@TRANSFORMS.register_module()
class PackSaliencyInputs(PackSegInputs):
    """mmseg's ``PackSegInputs``, plus the soft saliency mask as ``data_sample.gt_soft_mask`` when there is one.

    ``gt_soft_mask`` is a ``PixelData`` whose ``data`` is a ``(1, H, W)`` float32 tensor in ``[0, 1]`` (padded
    pixels excepted), aligned with ``gt_sem_seg``. Without a soft mask in ``results`` this is exactly
    ``PackSegInputs``. mmseg's metrics read ``gt_sem_seg`` only, so the soft mask never reaches evaluation.

    Args:
        meta_keys: as in ``PackSegInputs`` (same default).

    Raises:
        ValueError: at packing time, naming the mask file, if the soft mask was resized by a transform that
            resized it by nearest neighbour (a ``Resize`` other than ``SoftMaskResize``), or if its shape differs
            from the label map's.
    """

    def transform(self, results: Dict) -> Dict:
        packed = super().transform(results)
        soft = results.get(SOFT_MASK_KEY)
        if soft is None:
            return packed
        path = results.get('seg_map_path', '')
        if _as_scale(results.get('scale')) != _as_scale(results.get(SOFT_MASK_SCALE_KEY)):
            raise ValueError(f'PackSaliencyInputs: the soft mask of {path} was resized by a transform that resizes it '
                             "like a label map (nearest neighbour): use dict(type='SoftMaskResize', ...) instead of "
                             "Resize (and RandomResize(..., resize_type='SoftMaskResize'))")
        gt = results.get('gt_seg_map')
        if gt is not None and gt.shape != soft.shape:
            raise ValueError(f'PackSaliencyInputs: the soft mask of {path} is {soft.shape} but its label map is '
                             f'{gt.shape}; a transform moved one without the other (it must list both in seg_fields)')
        data = torch.from_numpy(np.ascontiguousarray(soft, dtype=np.float32)[None])
        packed['data_samples'].gt_soft_mask = PixelData(data=data)
        return packed
