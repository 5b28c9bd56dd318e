"""Deterministic generator of small synthetic segmentation datasets in the REAL on-disk layouts.

The embedded demo data of calibseg (``make data``; command line:
``python tools/dataset_converters/generate_demo_data.py --out data/demo``): a PASCAL VOC 2012 + SBD-aug copy
(:mod:`.voc`), a DUTS saliency copy (:mod:`.duts`) and, on request, a small Cityscapes copy (``cityscapes.py``),
each exactly in the layout mmseg 1.x (or calibseg's saliency datasets) reads, so that real configs, datasets and
runners run on it. Images are drawn from a generative model with confusable classes and label noise, so that an
over-trained cross-entropy model ends up over-confident (see each module's docstring).

Determinism: every image has its own ``numpy.random.Generator`` seeded by (seed, dataset, index, attempt), no
global RNG, and each dataset has its own random stream (generating one does not change another); JPEG (quality 80,
4:2:0) and PNG are written by Pillow, so a seed gives byte-identical files with the same numpy and Pillow.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional

from .common import DEFAULTS
from .duts import generate_duts, render_duts_sample
from .voc import NUM_CLASSES, VOC_CLASSES, VOC_PALETTE, generate_voc_aug, render_voc_sample

DATASETS = ('voc', 'duts', 'cityscapes')

__all__ = ['DEFAULTS', 'DATASETS', 'VOC_CLASSES', 'NUM_CLASSES', 'VOC_PALETTE', 'generate_demo_data',
           'generate_voc_aug', 'generate_duts', 'render_voc_sample', 'render_duts_sample']


def generate_demo_data(root: str, *, voc_train: int = DEFAULTS['voc_train'], voc_val: int = DEFAULTS['voc_val'],
                       duts_train: int = DEFAULTS['duts_train'], duts_test: int = DEFAULTS['duts_test'],
                       size: int = DEFAULTS['size'], seed: int = DEFAULTS['seed'], only: Optional[str] = None,
                       cityscapes: bool = False, verbose: bool = False) -> Dict[str, Dict[str, List[str]]]:
    """Generate the demo datasets under ``root``: VOC and DUTS, plus Cityscapes with ``cityscapes=True``.

    ``only`` (one of :data:`DATASETS`) generates that dataset alone. Sizes and counts apply to VOC and DUTS; the
    Cityscapes copy has its own fixed layout (see ``calibseg.datasets.demo.cityscapes``).

    Returns:
        ``{'voc': {'train': ids, 'aug': ids, 'val': ids}, 'duts': {'DUTS-TR': stems, 'DUTS-TE': stems}, ...}``
        for the datasets generated (sorted ids, as written to the split lists).

    Example:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     out = generate_demo_data(root, voc_train=3, voc_val=1, duts_train=1, duts_test=1, size=16)
        ...     sorted(os.listdir(root))
        ['DUTS', 'VOCdevkit']
        >>> sorted(out['voc']), len(out['voc']['val']), len(out['duts']['DUTS-TE'])
        (['aug', 'train', 'val'], 1, 1)
    """
    if only is not None and only not in DATASETS:
        raise ValueError(f'only must be one of {DATASETS} or None, got {only!r}')
    wanted = [only] if only else ['voc', 'duts'] + (['cityscapes'] if cityscapes else [])
    start = time.time()
    out: Dict[str, Dict[str, List[str]]] = {}
    if 'voc' in wanted:
        out['voc'] = generate_voc_aug(root, num_train=voc_train, num_val=voc_val, size=size, seed=seed,
                                      verbose=verbose)
    if 'duts' in wanted:
        out['duts'] = generate_duts(root, num_train=duts_train, num_test=duts_test, size=size, seed=seed,
                                    verbose=verbose)
    if 'cityscapes' in wanted:
        from .cityscapes import generate_cityscapes  # written by its own module (a separate random stream)

        out['cityscapes'] = generate_cityscapes(root, seed=seed, verbose=verbose)
    if verbose:
        print(f'[generate_demo_data] {", ".join(out)} in {time.time() - start:.1f}s -> {root}', flush=True)
    return out
