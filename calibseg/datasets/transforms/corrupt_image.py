"""A pipeline step that corrupts the loaded image (ImageNet-C style shift for segmentation test sets)."""
from __future__ import annotations

import os.path as osp
from typing import Dict

from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .corruptions import check_corruption, check_severity, corrupt_image, corruption_seed


@TRANSFORMS.register_module()
class CorruptImage(BaseTransform):
    """Apply one photometric corruption at one severity to ``results['img']``; labels are untouched.

    The corruptions and their severity table are in :mod:`calibseg.datasets.transforms.corruptions` (noise,
    blur, weather and digital families after ImageNet-C; geometric ones are left out because they move labels).
    The random pattern is seeded by (image file name, corruption, ``seed``) and scaled by the severity, so a
    corrupted test set is identical on every run, every rank and wherever the dataset root lies, and each image
    is corrupted more strongly at each higher severity. Place it right after
    ``LoadImageFromFile`` (before resizing, so the corruption sees the original pixels)::

        test_pipeline = [
            dict(type='LoadImageFromFile'),
            dict(type='CorruptImage', corruption='fog', severity=3),
            dict(type='Resize', scale=(2048, 512), keep_ratio=True),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs'),
        ]

    Args:
        corruption: a corruption name (``calibseg.datasets.transforms.corruptions.corruption_names()``).
        severity: 1 … 5.
        seed: an offset for every image's seed (a different but equally fixed corrupted set).
    """

    def __init__(self, *, corruption: str, severity: int, seed: int = 0) -> None:
        self.corruption = check_corruption(corruption)
        self.severity = check_severity(severity)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'seed must be an int, got {seed!r}')
        self.seed = seed

    def transform(self, results: Dict) -> Dict:
        if 'img' not in results:
            raise KeyError('CorruptImage needs `img`: put it after LoadImageFromFile')
        path = results.get('img_path')
        if not path:
            raise KeyError('CorruptImage needs `img_path` to seed the corruption of each image deterministically')
        img = results['img']
        if getattr(img, 'ndim', 0) == 2:
            raise ValueError(f'CorruptImage needs a 3-channel image; {path} loaded as grayscale '
                             "(use LoadImageFromFile(color_type='color'))")
        key = osp.basename(str(path))
        seed = corruption_seed(key, self.corruption, self.seed)
        try:
            results['img'] = corrupt_image(img, self.corruption, self.severity, seed=seed, channel_order='bgr')
        except ValueError as err:
            raise ValueError(f'{path}: {err}') from err
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(corruption={self.corruption!r}, severity={self.severity}, '
                f'seed={self.seed})')
