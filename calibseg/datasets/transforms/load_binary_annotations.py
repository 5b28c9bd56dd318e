"""Load a 0/255 saliency mask as {0, 1} labels (so that foreground never collides with ignore_index 255)."""
from __future__ import annotations

from typing import Dict, Optional

import mmcv
import numpy as np
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS


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
    ``label_map`` (custom classes), if any, is applied afterwards. A mask stored as 0/1 values would
    become all background: ``tools/dataset_converters/check_saliency_dataset.py`` reports such masks.

    Args:
        threshold: grayscale level in ``[0, 255)``; pixels strictly above it are foreground.
        imdecode_backend: ``mmcv.imfrombytes`` backend (``'pillow'`` or ``'cv2'``).
        backend_args: file backend arguments (mmengine ``fileio``).

    Raises:
        ValueError: on a bad ``threshold``, or at load time if the dataset asks for
            ``reduce_zero_label`` (meaningless for binary masks).
    """

    def __init__(self, *, threshold: int = 128, imdecode_backend: str = 'pillow',
                 backend_args: Optional[dict] = None) -> None:
        super().__init__(reduce_zero_label=None, backend_args=backend_args, imdecode_backend=imdecode_backend)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 255:
            raise ValueError(f'threshold must be a number in [0, 255), got {threshold!r}')
        self.threshold = threshold

    def _load_seg_map(self, results: Dict) -> None:
        if results.get('reduce_zero_label', False):
            raise ValueError(f"LoadBinaryAnnotations: reduce_zero_label=True makes no sense for binary masks "
                             f"({results.get('seg_map_path')}); build the dataset with reduce_zero_label=False")
        img_bytes = fileio.get(results['seg_map_path'], backend_args=self.backend_args)
        gray = mmcv.imfrombytes(img_bytes, flag='grayscale', backend=self.imdecode_backend)
        if gray.ndim != 2:
            raise ValueError(f"could not decode {results['seg_map_path']} as a single-channel mask "
                             f'(got shape {gray.shape})')
        gt = (gray > self.threshold).astype(np.uint8)
        label_map = results.get('label_map')
        if label_map:
            mapped = gt.copy()
            for old_id, new_id in label_map.items():
                mapped[gt == old_id] = new_id
            gt = mapped
        results['gt_seg_map'] = gt
        results.setdefault('seg_fields', []).append('gt_seg_map')

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(threshold={self.threshold}, imdecode_backend='{self.imdecode_backend}', "
                f'backend_args={self.backend_args})')
