"""DUTS saliency layout of the demo data (calibseg's ``DUTSDataset``).

Under ``<root>/DUTS/``::

    DUTS-TR/DUTS-TR-Image/<name>.jpg    DUTS-TR/DUTS-TR-Mask/<name>.png
    DUTS-TE/DUTS-TE-Image/<name>.jpg    DUTS-TE/DUTS-TE-Mask/<name>.png

Masks are mode 'L', 0/255 except a small fraction of anti-aliased edge pixels (as real masks).

Generative model (DUTS). One (70%) or two salient objects, large and near the centre, whose colour
contrasts with a cluttered background, except in 20% ambiguous images where the main object has
nearly the background's colour (only texture and edges tell it apart); 25% of images have a
contrasting but non-salient distractor object at the border (labelled 0).
"""
from __future__ import annotations

import os
import os.path as osp
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

from .common import (
    DEFAULTS,
    PATTERNS,
    SHAPES,
    background,
    blur,
    composite,
    hsv_color,
    make_shape,
    photometric,
    rgb_to_hsv,
    save_jpeg,
    shape_coverage,
    texture_map,
    two_tone,
)

# the DUTS random stream (independent of the other datasets': generating one does not change another)
_DUTS_STREAM = 0x445554

__all__ = ['render_duts_sample', 'generate_duts']


# ---------------------------------------------------------------------------------- DUTS
def _duts_names(rng: np.random.Generator, n: int, test: bool) -> List[str]:
    if test:
        nums = rng.choice(20000, size=n, replace=False) + 1
        return sorted(f'ILSVRC2012_test_{int(v):08d}' for v in nums)
    names: set = set()
    while len(names) < n:
        names.add(f'n0{int(rng.integers(1_000_000, 4_600_000)):07d}_{int(rng.integers(1, 30000))}')
    return sorted(names)


def _random_kind(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def render_duts_sample(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """One DUTS-like sample: (RGB uint8 (size, size, 3), mask uint8 (size, size)).

    The mask is 0/255 with soft (anti-aliased) values on some edge pixels."""
    img, bg_mean = background(rng, size)
    scale = max(size / 96.0, 0.5)
    bg_hue = rgb_to_hsv(bg_mean)[0]
    tex_freq = 96.0 / size

    def random_pattern() -> np.ndarray:
        return texture_map(rng, _random_kind(rng, PATTERNS), rng.uniform(0.05, 0.3) * tex_freq,
                        rng.uniform(0, 180), size, size)

    def random_shape(cy: float, cx: float, radius: float) -> dict:
        return make_shape(rng, _random_kind(rng, SHAPES), cy, cx, radius,
                             rng.uniform(0.5, 2.0), rng.uniform(0, np.pi))

    # background clutter: low-contrast patches in the background's own colours
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, size, 2)
        shp = random_shape(cy, cx, rng.uniform(0.06, 0.15) * size)
        col = np.clip(bg_mean + rng.normal(0, 30, 3), 0, 255)
        tex = two_tone(random_pattern(), col, col * rng.uniform(0.6, 0.9), 0.8)
        alpha = blur(shape_coverage(shp, size, size, 2), scale) * rng.uniform(0.3, 0.7)
        img = composite(img, tex, alpha)

    def salient_texture(ambiguous: bool) -> np.ndarray:
        if ambiguous:  # close to the background: only texture and edges separate it
            a = np.clip(bg_mean + rng.normal(0, 22, 3), 0, 255)
        else:
            a = hsv_color(bg_hue + 0.5 + rng.normal(0, 0.12), rng.uniform(0.45, 1.0),
                     rng.uniform(0.45, 1.0))
        b = np.clip(a * rng.uniform(0.5, 0.85) + rng.normal(0, 15, 3), 0, 255)
        tex = two_tone(random_pattern(), a, b, rng.uniform(0.4, 1.0))
        return tex + rng.normal(0, 5, (size, size, 1))

    if rng.random() < 0.25:  # a contrasting but non-salient object at the border (label 0)
        side = rng.uniform(0.04, 0.12) * size
        along = rng.uniform(0, size)
        cy, cx = (side, along) if rng.random() < 0.5 else (along, side)
        if rng.random() < 0.5:
            cy, cx = size - cy, size - cx
        shp = random_shape(cy, cx, rng.uniform(0.08, 0.14) * size)
        alpha = blur(shape_coverage(shp, size, size, 2), scale) * rng.uniform(0.7, 1.0)
        img = composite(img, salient_texture(False), alpha)
    ambiguous = rng.random() < 0.2
    cover = np.zeros((size, size))
    for j in range(1 if rng.random() < 0.7 else 2):
        radius = (rng.uniform(0.18, 0.34) if j == 0 else rng.uniform(0.12, 0.22)) * size
        cy, cx = np.clip(rng.normal(0.5, 0.13, 2), 0.25, 0.75) * size
        cov = shape_coverage(random_shape(cy, cx, radius), size, size, 4)
        alpha = blur(cov, rng.uniform(0.4, 1.0) * scale)
        img = composite(img, salient_texture(ambiguous and j == 0), alpha)
        cover = np.maximum(cover, cov)
    mask = np.round(cover * 255)
    mask[cover <= 0.12] = 0
    mask[cover >= 0.88] = 255
    return photometric(rng, img), mask.astype(np.uint8)


def generate_duts(root: str, *, num_train: int = DEFAULTS['duts_train'],
                  num_test: int = DEFAULTS['duts_test'], size: int = DEFAULTS['size'],
                  seed: int = DEFAULTS['seed'], verbose: bool = False) -> Dict[str, List[str]]:
    """Write a DUTS style saliency dataset under ``<root>/DUTS``.

    Returns ``{'DUTS-TR': [...], 'DUTS-TE': [...]}`` (sorted file stems)."""
    assert num_train >= 0 and num_test >= 0 and size >= 16
    t0 = time.time()
    rng = np.random.default_rng([seed, _DUTS_STREAM])
    out: Dict[str, List[str]] = {}
    for code, (split, n) in enumerate((('DUTS-TR', num_train), ('DUTS-TE', num_test))):
        img_dir = osp.join(root, 'DUTS', split, split + '-Image')
        mask_dir = osp.join(root, 'DUTS', split, split + '-Mask')
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(mask_dir, exist_ok=True)
        names = _duts_names(rng, n, test=code == 1)
        for idx, name in enumerate(names):
            rng_i = np.random.default_rng([seed, _DUTS_STREAM, code, idx])
            img, mask = render_duts_sample(rng_i, size)
            save_jpeg(img, osp.join(img_dir, name + '.jpg'))
            Image.fromarray(mask).save(osp.join(mask_dir, name + '.png'))
            if verbose and ((idx + 1) % 50 == 0 or idx + 1 == n):
                print(f'[duts] {split}: {idx + 1}/{n} images', flush=True)
        out[split] = names
    if verbose:
        print(f'[duts] {osp.join(root, "DUTS")}: DUTS-TR {num_train}, DUTS-TE {num_test} '
              f'({size}x{size}) in {time.time() - t0:.1f}s', flush=True)
    return out
