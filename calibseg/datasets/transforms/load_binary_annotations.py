"""Load a 0/255 saliency mask as {0, 1} labels (so that foreground never collides with ignore_index 255), and
optionally its grey levels as a soft target in [0, 1] (``soft=True``)."""
from __future__ import annotations

from typing import Dict, Optional

import mmcv
import numpy as np
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

__all__ = ['LoadBinaryAnnotations', 'SOFT_MASK_KEY', 'SOFT_MASK_SCALE_KEY']

SOFT_MASK_KEY = 'gt_soft_mask'
"""Results key (and ``SegDataSample`` field, see ``PackSaliencyInputs``) of the soft saliency target."""

SOFT_MASK_SCALE_KEY = 'soft_mask_scale'
"""Results key recording the ``scale`` the soft mask was last resized to (``None``: never resized). A resize that
handles the soft mask (``SoftMaskResize``) updates it; ``PackSaliencyInputs`` refuses a soft mask whose record
differs from the last resize's ``scale`` (it was resized by nearest neighbour, like a label map)."""


@TRANSFORMS.register_module()
class LoadBinaryAnnotations(LoadAnnotations):
    """Load a binary (saliency) mask and binarise it: ``value > threshold`` -> 1, else 0.

    Saliency masks are 8-bit 0/255 images, often with anti-aliased (soft) edge values. Loaded with
    mmseg's ``LoadAnnotations`` they keep the value 255 for foreground, which is mmseg's default
    ``ignore_index``: every foreground pixel would silently be ignored. **Configs of the saliency
    datasets must use this transform instead of** ``LoadAnnotations``::

        pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadBinaryAnnotations'),
                    ..., dict(type='PackSegInputs')]

    The mask is decoded as 8-bit grayscale (Pillow's ``convert('L')``), so single-channel, RGB and
    palette masks all give the luminance of the stored colour, then thresholded as in the saliency
    evaluation protocol (``> 128``). ``gt_seg_map`` is ``uint8`` in ``{0, 1}``; the dataset's
    ``label_map`` (custom classes), if any, is applied afterwards.

    Refused, with the file named (``tools/dataset_converters/check_saliency_dataset.py`` finds them all at
    once): a file that does not decode (truncated or corrupt); a mask whose size differs from the image
    loaded before it (``ori_shape`` of ``LoadImageFromFile``); a non-empty mask with no value above the
    threshold (a 0/1 or 0/100 label map), which would silently become all background (for such masks pass a
    lower ``threshold``, e.g. ``threshold=0`` for 0/1).

    **Soft targets** (``soft=True``): the grey levels also go into ``results['gt_soft_mask']`` as ``float32``
    ``grey / 255`` in ``[0, 1]`` (unthresholded), appended to ``seg_fields`` so that flips and crops keep it
    aligned with ``gt_seg_map``; resize with ``SoftMaskResize`` (bilinear for the soft mask, as the ASLP reference
    resizes its masks before ``ToTensor``), pack with ``PackSaliencyInputs`` (``data_sample.gt_soft_mask``), and
    train with a segmentor that hands it to the losses (``SoftTargetEncoderDecoder``,
    ``ASLPEncoderDecoder(soft_targets=True)``; any other segmentor trains on ``gt_seg_map`` and never reads the
    soft mask). ``gt_seg_map`` stays the binarised map: it still decides which pixels are ignored and is what
    evaluation reads (test pipelines load without ``soft``). Liu et al., "Model
    Calibration in Dense Classification with Adaptive Label Perturbation", ICCV 2023 (their code trains on the
    resized grey masks).

    Args:
        threshold: grayscale level in ``[0, 255)``; pixels strictly above it are foreground.
        soft: also keep the grey levels as the soft target ``gt_soft_mask`` (see above).
        imdecode_backend: ``mmcv.imfrombytes`` backend (``'pillow'`` or ``'cv2'``).
        backend_args: file backend arguments (mmengine ``fileio``).

    Raises:
        ValueError: on a bad ``threshold`` or ``soft``; at load time if the dataset asks for ``reduce_zero_label``
            (meaningless for binary masks), on a size mismatch or a mask that binarising would empty, or with
            ``soft=True`` if the dataset relabels classes (``label_map``: a grey level has no class to relabel).
        OSError: at load time, naming the file, if it cannot be read or decoded.
    """

    def __init__(self, *, threshold: int = 128, soft: bool = False, imdecode_backend: str = 'pillow',
                 backend_args: Optional[dict] = None) -> None:
        super().__init__(reduce_zero_label=None, backend_args=backend_args, imdecode_backend=imdecode_backend)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 255:
            raise ValueError(f'threshold must be a number in [0, 255), got {threshold!r}')
        if not isinstance(soft, bool):
            raise ValueError(f'soft must be a bool, got {soft!r}')
        self.threshold = threshold
        self.soft = soft

    def _load_seg_map(self, results: Dict) -> None:
        if results.get('reduce_zero_label', False):
            raise ValueError(f"LoadBinaryAnnotations: reduce_zero_label=True makes no sense for binary masks "
                             f"({results.get('seg_map_path')}); build the dataset with reduce_zero_label=False")
        path = results['seg_map_path']
        try:
            img_bytes = fileio.get(path, backend_args=self.backend_args)
            gray = mmcv.imfrombytes(img_bytes, flag='grayscale', backend=self.imdecode_backend)
        except Exception as err:  # Pillow's "image file is truncated" does not say which file
            raise OSError(f'LoadBinaryAnnotations: cannot read the mask {path}: {type(err).__name__}: {err}') \
                from err
        if gray is None or gray.ndim != 2:
            shape = None if gray is None else gray.shape
            raise OSError(f'LoadBinaryAnnotations: could not decode {path} as a single-channel mask (got {shape})')
        img_shape = results.get('ori_shape')  # the image as decoded from its file by LoadImageFromFile
        if img_shape is not None and tuple(img_shape[:2]) != gray.shape:
            raise ValueError(f'LoadBinaryAnnotations: the mask {path} is {gray.shape[1]}x{gray.shape[0]} (WxH) but '
                             f"its image {results.get('img_path', '')} is {img_shape[1]}x{img_shape[0]}")
        top = int(gray.max()) if gray.size else 0
        if 0 < top <= self.threshold:
            raise ValueError(f'LoadBinaryAnnotations: the mask {path} holds values up to {top} but none above '
                             f'threshold={self.threshold}: binarised it would be all background. Is it a 0/1 or '
                             f'0/{top} label map? Convert it to 0/255, or pass a lower threshold (values > '
                             f'threshold are foreground, e.g. threshold=0 for 0/1 masks)')
        gt = (gray > self.threshold).astype(np.uint8)
        label_map = results.get('label_map')
        if self.soft:
            if label_map and any(old != new for old, new in label_map.items()):
                raise ValueError(f'LoadBinaryAnnotations(soft=True): the dataset relabels classes (label_map='
                                 f'{label_map}) but a soft mask holds grey levels, not classes ({path})')
            results[SOFT_MASK_KEY] = gray.astype(np.float32) / np.float32(255.0)
            results[SOFT_MASK_SCALE_KEY] = results.get('scale')  # a resize before loading does not touch it
        if label_map:
            mapped = gt.copy()
            for old_id, new_id in label_map.items():
                mapped[gt == old_id] = new_id
            gt = mapped
        results['gt_seg_map'] = gt
        results.setdefault('seg_fields', []).append('gt_seg_map')
        if self.soft:
            results['seg_fields'].append(SOFT_MASK_KEY)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(threshold={self.threshold}, soft={self.soft}, "
                f"imdecode_backend='{self.imdecode_backend}', "
                f'backend_args={self.backend_args})')
