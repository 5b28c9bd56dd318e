"""A pipeline step that rejects label maps with values outside the dataset's classes."""
from __future__ import annotations

from typing import Dict

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckLabelRange(BaseTransform):
    """Raise if a loaded label map holds a value outside ``[0, num_classes)`` other than ``ignore_index``.

    mmseg's losses index with raw label values, so an out-of-range value otherwise surfaces as a CUDA
    assert or a silently wrong loss far from the file that caused it. Place it right after
    ``LoadAnnotations``.

    Args:
        num_classes: number of classes K of the dataset.
        ignore_index: label value that marks ignored pixels.
    """

    def __init__(self, *, num_classes: int, ignore_index: int = 255) -> None:
        if int(num_classes) < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)

    def transform(self, results: Dict) -> Dict:
        if 'gt_seg_map' not in results:
            raise KeyError('CheckLabelRange needs `gt_seg_map`: put it after LoadAnnotations')
        values = np.unique(results['gt_seg_map'])
        bad = values[((values < 0) | (values >= self.num_classes)) & (values != self.ignore_index)]
        if bad.size:
            raise ValueError(
                f"label map {results.get('seg_map_path', '<in memory>')} has values {bad.tolist()} "
                f'outside [0, {self.num_classes}) that are not the ignore index {self.ignore_index}')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index})'
