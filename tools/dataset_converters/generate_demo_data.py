#!/usr/bin/env python
"""Deterministic generator of small synthetic segmentation datasets in the REAL on-disk layouts.

    python tools/dataset_converters/generate_demo_data.py --out data/demo [--voc-train 160]
        [--voc-val 41] [--duts-train 120] [--duts-test 40] [--size 96] [--seed 0] [--only voc|duts]

Layouts (exactly what mmseg 1.x reads; nothing calibseg-specific):

* PASCAL VOC 2012 + SBD augmentation (mmseg's ``configs/_base_/datasets/pascal_voc12_aug.py``,
  ``PascalVOCDataset``), under ``<root>/VOCdevkit/VOC2012/``::

    JPEGImages/<id>.jpg             every id (train, aug, val)
    SegmentationClass/<id>.png      train + val ids only (as in VOC): mode 'P', standard VOC
                                    colormap, 255 = the void boundary colour (224, 224, 192)
    SegmentationClassAug/<id>.png   every id: mode 'L', raw class indices 0..20 and 255
    ImageSets/Segmentation/{train,aug,val}.txt

  Ids look like ``2007_000032``. The ``num_train`` training ids are split into ``train.txt``
  (VOC-style annotations with 1-2 px ignore bands on object boundaries) and ``aug.txt`` (the extra,
  SBD-style ids: no void bands, like SBD's converted masks). ``train.txt`` and ``aug.txt`` are
  disjoint, their union is the training set (the ``ConcatDataset`` of mmseg's voc aug config), and
  ``val.txt`` is disjoint from both.

* DUTS saliency, under ``<root>/DUTS/``::

    DUTS-TR/DUTS-TR-Image/<name>.jpg    DUTS-TR/DUTS-TR-Mask/<name>.png
    DUTS-TE/DUTS-TE-Image/<name>.jpg    DUTS-TE/DUTS-TE-Mask/<name>.png

  Masks are mode 'L', 0/255 except a small fraction of anti-aliased edge pixels (as real masks).

Generative model (VOC). Every foreground class has a fixed style: two tone colours, a texture
pattern (stripes / checks / spots / grain) with a characteristic frequency and orientation, and a
shape prior (family, size, aspect, upright or not). Six pairs are deliberately confusable
(aeroplane/bird, bicycle/motorbike, bus/train, cat/dog, cow/horse, chair/sofa): near-identical
colours, the same pattern, frequency and orientation within the per-object jitter of each other.
An image is a textured class-0 background (two colours mixed by smooth noise, faint stripes, in
30% of images faint class-like "distractor" patches that stay background) with 1-2 objects for
each of 1-4 (mostly 2-3) classes, drawn from a balanced schedule so that every class occurs in the
training set; confusable partners often co-occur. Objects are ellipses, star polygons, rectangles
or harmonic blobs composited with blurred (soft) alpha mattes, 12% semi-transparent; the label is
the alpha thresholded at a random level in [0.4, 0.6] (boundary jitter), later objects occlude
earlier ones. Noise: 7% of objects carry the label of their confusable partner (or of a random
class), VOC-style ids get 1-2 px 255 bands on 85% of object boundaries, and every image gets a
colour cast, brightness change, illumination gradient, pixel noise and JPEG compression (quality
80). Colour, texture and shape are informative but the classes are not separable, so an
over-trained cross-entropy model ends up over-confident.

Generative model (DUTS). One (70%) or two salient objects, large and near the centre, whose colour
contrasts with a cluttered background, except in 20% ambiguous images where the main object has
nearly the background's colour (only texture and edges tell it apart); 25% of images have a
contrasting but non-salient distractor object at the border (labelled 0).

Determinism: every image has its own ``numpy.random.Generator`` seeded by (seed, dataset, index,
attempt), no global RNG; JPEG (quality 80, 4:2:0) and PNG are written by Pillow, so a seed gives
byte-identical files.
"""
from __future__ import annotations

import argparse
import colorsys
import os
import os.path as osp
import sys
import time
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from PIL import Image

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
               'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')
NUM_CLASSES = len(VOC_CLASSES)  # 21, class 0 is the background
IGNORE_INDEX = 255
JPEG_QUALITY = 80
DEFAULTS = dict(voc_train=160, voc_val=41, duts_train=120, duts_test=40, size=96, seed=0)

# independent random streams per dataset, so that --only does not change the other one
_VOC_STREAM = 0x564F43
_DUTS_STREAM = 0x445554


def voc_palette(num: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colormap, ``(num, 3)`` uint8 (index 255 -> (224, 224, 192))."""
    pal = np.zeros((num, 3), dtype=np.uint8)
    for i in range(num):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


VOC_PALETTE = voc_palette()


class ClassStyle(NamedTuple):
    color_a: Tuple[int, int, int]
    color_b: Tuple[int, int, int]
    pattern: str  # stripes | checks | spots | grain
    freq: float  # cycles per pixel at 96 px (scaled with the image size)
    angle: float  # texture orientation, degrees
    shape: str  # ellipse | polygon | rect | blob
    radius: float  # mean object radius, fraction of the image size
    aspect: float  # long/short axis ratio (> 1: wide, < 1: tall)
    upright: bool  # shape keeps its orientation (boat, bottle, person, ...)


# Confusable pairs share colours, pattern and shape family; their frequency/orientation differ by
# about the per-object jitter (frequency x U(0.85, 1.15), orientation + N(0, 12 deg)).
_S = ClassStyle
CLASS_STYLES: Dict[int, ClassStyle] = {
    1: _S((172, 186, 206), (118, 132, 160), 'stripes', 0.10, 0, 'polygon', 0.24, 2.0, False),
    3: _S((160, 178, 208), (110, 128, 162), 'stripes', 0.13, 40, 'blob', 0.19, 1.5, False),
    2: _S((62, 60, 72), (150, 148, 48), 'stripes', 0.30, 90, 'polygon', 0.20, 1.6, True),
    14: _S((76, 54, 64), (166, 136, 54), 'stripes', 0.22, 45, 'polygon', 0.23, 1.4, True),
    6: _S((228, 188, 42), (122, 92, 32), 'checks', 0.12, 0, 'rect', 0.26, 1.8, True),
    19: _S((218, 170, 52), (110, 82, 40), 'checks', 0.10, 20, 'rect', 0.27, 2.4, True),
    8: _S((200, 132, 72), (92, 62, 42), 'spots', 0.15, 0, 'blob', 0.18, 1.3, False),
    12: _S((186, 126, 80), (82, 60, 46), 'spots', 0.13, 0, 'blob', 0.20, 1.4, False),
    10: _S((112, 82, 62), (232, 222, 212), 'spots', 0.09, 0, 'ellipse', 0.23, 1.6, True),
    13: _S((126, 86, 56), (204, 182, 160), 'spots', 0.10, 0, 'ellipse', 0.24, 1.5, True),
    9: _S((150, 52, 50), (92, 32, 30), 'stripes', 0.20, 0, 'polygon', 0.16, 0.9, True),
    18: _S((162, 64, 56), (100, 36, 34), 'stripes', 0.14, 30, 'polygon', 0.25, 1.9, True),
    4: _S((238, 238, 244), (42, 70, 150), 'stripes', 0.22, 0, 'ellipse', 0.21, 2.6, True),
    5: _S((42, 150, 90), (20, 80, 50), 'grain', 0.30, 0, 'ellipse', 0.15, 0.38, True),
    7: _S((32, 62, 198), (200, 200, 212), 'checks', 0.20, 45, 'rect', 0.20, 1.7, True),
    11: _S((150, 110, 62), (190, 150, 92), 'stripes', 0.05, 90, 'rect', 0.28, 1.4, False),
    15: _S((228, 180, 150), (62, 42, 120), 'grain', 0.25, 0, 'ellipse', 0.20, 0.42, True),
    16: _S((42, 170, 42), (22, 92, 22), 'spots', 0.25, 0, 'blob', 0.17, 0.8, True),
    17: _S((236, 234, 224), (196, 196, 182), 'grain', 0.35, 0, 'blob', 0.19, 1.4, False),
    20: _S((22, 22, 28), (82, 200, 230), 'checks', 0.30, 0, 'rect', 0.19, 1.3, True),
}
CONFUSABLE: Dict[int, int] = {}
for _a, _b in ((1, 3), (2, 14), (6, 19), (8, 12), (10, 13), (9, 18)):
    CONFUSABLE[_a], CONFUSABLE[_b] = _b, _a

_LABEL_FLIP_PROB = 0.07
_BAND_PROB = 0.85
_PATTERNS = ('stripes', 'checks', 'spots', 'grain')
_SHAPES = ('ellipse', 'polygon', 'rect', 'blob')


# ---------------------------------------------------------------------------------- primitives
def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W) or (H, W, C) array (edge padding)."""
    if sigma <= 0.05:
        return a
    r = max(1, int(np.ceil(3.0 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    h, w = a.shape[:2]
    extra = [(0, 0)] * (a.ndim - 2)
    p = np.pad(a, [(r, r), (0, 0)] + extra, mode='edge')
    a = sum(k[i] * p[i:i + h] for i in range(2 * r + 1))
    p = np.pad(a, [(0, 0), (r, r)] + extra, mode='edge')
    return sum(k[i] * p[:, i:i + w] for i in range(2 * r + 1))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Value noise: a (cells+2)^2 Gaussian grid, smoothstep-interpolated to (h, w), unit std."""
    n = max(1, int(round(cells)))
    g = rng.standard_normal((n + 2, n + 2))
    off = rng.uniform(0.0, 1.0, 2)

    def axis(size: int, o: float) -> Tuple[np.ndarray, np.ndarray]:
        t = (np.arange(size) + 0.5) / size * n + o
        i0 = np.minimum(t.astype(int), n)
        f = t - i0
        return i0, f * f * (3.0 - 2.0 * f)

    iy, fy = axis(h, off[0])
    ix, fx = axis(w, off[1])
    fy, fx = fy[:, None], fx[None, :]
    top = g[iy][:, ix] * (1 - fx) + g[iy][:, ix + 1] * fx
    bot = g[iy + 1][:, ix] * (1 - fx) + g[iy + 1][:, ix + 1] * fx
    out = top * (1 - fy) + bot * fy
    return (out - out.mean()) / (out.std() + 1e-6)


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    for _ in range(r):
        p = np.pad(m, 1, mode='constant', constant_values=False)
        h, w = m.shape
        out = np.zeros_like(m)
        for dy in range(3):
            for dx in range(3):
                out |= p[dy:dy + h, dx:dx + w]
        m = out
    return m


def _erode(m: np.ndarray, r: int) -> np.ndarray:
    return ~_dilate(~m, r) if r > 0 else m


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return np.array(rgb) * 255.0


def _rgb_to_hsv(rgb: np.ndarray) -> Tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(np.clip(rgb, 0, 255) / 255.0))


# ---------------------------------------------------------------------------------- shapes
def _random_shape(rng: np.random.Generator, kind: str, cy: float, cx: float, radius: float,
                  aspect: float, angle: float) -> dict:
    shape = dict(kind=kind, cy=cy, cx=cx, radius=radius, aspect=aspect, angle=angle)
    if kind == 'blob':
        shape['harm'] = [(k, rng.uniform(0.0, 0.18), rng.uniform(0, 2 * np.pi))
                         for k in (2, 3, 4)]
    elif kind == 'polygon':
        n = int(rng.integers(5, 9))
        th = np.sort(2 * np.pi * (np.arange(n) + rng.uniform(-0.3, 0.3, n)) / n)
        rad = rng.uniform(0.7, 1.15, n)
        shape['verts'] = (rad * np.cos(th), rad * np.sin(th))
    elif kind == 'rect':
        th = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi + rng.uniform(-0.06, 0.06, 4)
        rad = 1.2 * rng.uniform(0.92, 1.05, 4)
        shape['verts'] = (rad * np.cos(th), rad * np.sin(th))
    return shape


def _shape_coverage(shape: dict, h: int, w: int, ss: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape (``ss`` x ``ss`` supersampling), (h, w)."""
    out = np.zeros((h, w))
    sa = float(np.sqrt(shape['aspect']))
    ext = 1.6 * shape['radius'] * max(sa, 1 / sa) + 1
    y0, y1 = max(0, int(shape['cy'] - ext)), min(h, int(np.ceil(shape['cy'] + ext)))
    x0, x1 = max(0, int(shape['cx'] - ext)), min(w, int(np.ceil(shape['cx'] + ext)))
    if y1 <= y0 or x1 <= x0:
        return out
    ys = (y0 + (np.arange((y1 - y0) * ss) + 0.5) / ss - shape['cy']).astype(np.float32)
    xs = (x0 + (np.arange((x1 - x0) * ss) + 0.5) / ss - shape['cx']).astype(np.float32)
    c, s = float(np.cos(shape['angle'])), float(np.sin(shape['angle']))
    r = float(shape['radius'])
    dy, dx = ys[:, None], xs[None, :]
    u = (dx * (c / (r * sa)) + dy * (s / (r * sa)))
    v = (dx * (-s * sa / r) + dy * (c * sa / r))
    kind = shape['kind']
    if kind == 'ellipse':
        inside = u * u + v * v <= 1.0
    elif kind == 'blob':
        rho = np.sqrt(u * u + v * v)
        th = np.arctan2(v, u)
        bound = np.ones_like(rho)
        for k, a, ph in shape['harm']:
            bound = bound + float(a) * np.cos(k * th + float(ph))
        inside = rho <= bound
    else:  # polygon / rect: even-odd rule
        vx, vy = shape['verts']
        inside = np.zeros(u.shape, dtype=bool)
        for i in range(len(vx)):
            ax, ay, bx, by = float(vx[i]), float(vy[i]), float(vx[i - 1]), float(vy[i - 1])
            crosses = (ay > v) != (by > v)
            xint = (bx - ax) * (v - ay) / (by - ay + 1e-12) + ax
            inside ^= crosses & (u < xint)
    out[y0:y1, x0:x1] = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    return out


# ---------------------------------------------------------------------------------- appearance
def _pattern(rng: np.random.Generator, pattern: str, freq: float, angle_deg: float, h: int,
             w: int) -> np.ndarray:
    """A [0, 1] texture map; ``freq`` in cycles per pixel."""
    freq = float(min(freq, 0.45))
    th = np.deg2rad(angle_deg)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)
    if pattern == 'stripes':
        return 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi))
    if pattern == 'checks':
        p = np.sin(2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi)) * np.sin(
            2 * np.pi * freq * v + rng.uniform(0, 2 * np.pi))
        return 0.5 + 0.5 * np.tanh(2.5 * p)
    if pattern == 'spots':
        n = _smooth_noise(rng, h, w, max(2.0, freq * max(h, w)))
        return 1.0 / (1.0 + np.exp(-4.0 * (n - 0.4)))
    n = _blur(rng.standard_normal((h, w)), max(0.5, 0.25 / freq))  # grain
    return 0.5 + 0.5 * np.tanh(1.5 * n / (n.std() + 1e-6))


def _two_tone(m: np.ndarray, a: np.ndarray, b: np.ndarray, contrast: float) -> np.ndarray:
    m = 0.5 + contrast * (m - 0.5)
    return a[None, None, :] * (1 - m[..., None]) + b[None, None, :] * m[..., None]


def _class_texture(rng: np.random.Generator, c: int, size: int) -> np.ndarray:
    st = CLASS_STYLES[c]
    bright = rng.uniform(0.85, 1.12)
    a = (np.array(st.color_a, float) + rng.normal(0, 14, 3)) * bright
    b = (np.array(st.color_b, float) + rng.normal(0, 14, 3)) * bright
    freq = st.freq * 96.0 / size * rng.uniform(0.85, 1.15)
    m = _pattern(rng, st.pattern, freq, st.angle + rng.normal(0, 12), size, size)
    tex = _two_tone(m, a, b, rng.uniform(0.6, 1.0))
    # shading across the object and a little luminance grain
    g = np.linspace(-1, 1, size)
    shade = 1 + rng.uniform(-0.1, 0.1) * g[:, None] + rng.uniform(-0.1, 0.1) * g[None, :]
    return tex * shade[..., None] + rng.normal(0, 5, (size, size, 1))


def _background(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Class-0 texture: two colours mixed by smooth noise, faint stripes and grain.

    Returns (image, mean colour)."""
    hue = rng.uniform(0, 1)
    c1 = _hsv(hue, rng.uniform(0.0, 0.45), rng.uniform(0.3, 0.85))
    c2 = np.clip(c1 + rng.normal(0, 40, 3), 0, 255)
    m = 1.0 / (1.0 + np.exp(-1.5 * _smooth_noise(rng, size, size, rng.uniform(1.5, 4.5))))
    img = _two_tone(m, c1, c2, 1.0)
    stripes = _pattern(rng, 'stripes', rng.uniform(0.04, 0.3) * 96.0 / size, rng.uniform(0, 180),
                       size, size)
    img += (rng.uniform(0, 14) * (stripes - 0.5))[..., None]
    img += 6.0 * _smooth_noise(rng, size, size, size / 6.0)[..., None]
    return img, (c1 + c2) / 2


def _composite(img: np.ndarray, tex: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return img * (1 - a) + tex * a


def _photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Per-image brightness, colour cast, illumination gradient and pixel noise -> uint8."""
    size = img.shape[0]
    gain = rng.uniform(0.85, 1.12) * (1 + rng.normal(0, 0.05, 3))
    th = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    grad = 1 + rng.uniform(0, 0.25) * (xx * np.cos(th) + yy * np.sin(th))
    img = img * gain[None, None, :] * grad[..., None] + rng.normal(0, 4, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _save_jpeg(img: np.ndarray, path: str) -> None:
    Image.fromarray(img).save(path, format='JPEG', quality=JPEG_QUALITY, subsampling=2,
                              optimize=False)


# ---------------------------------------------------------------------------------- VOC
def _voc_ids(rng: np.random.Generator, n: int) -> List[str]:
    """``n`` unique VOC-style ids (``2007_000032`` .. ``2011_00xxxx``)."""
    per_year = 8000
    u = rng.choice(5 * per_year, size=n, replace=False)
    return [f'{2007 + int(v) // per_year}_{int(v) % per_year + 1:06d}' for v in u]


def _schedule_classes(rng: np.random.Generator, n: int,
                      ensure_coverage: bool) -> List[Tuple[List[int], List[int]]]:
    """Per image ``(classes, anchors)``.

    1-4 (mostly 2-3) classes per image, drawn from a stream of permutations of 1..20 (so that all
    classes occur about equally often); a confusable partner is added 30% of the time. With
    ``ensure_coverage``, ``anchors`` are the classes first seen in that image: they are never
    label-flipped and are checked to be visible, so every class is in the set (given >= 5 images).
    """
    k = rng.choice([1, 2, 3, 4], size=n, p=[0.1, 0.4, 0.35, 0.15])
    if ensure_coverage:
        i = 0
        while k.sum() < NUM_CLASSES - 1 and (k < 4).any():
            if k[i % n] < 4:
                k[i % n] += 1
            i += 1
    stream: List[int] = []
    seen: set = set()
    out = []
    for i in range(n):
        chosen: List[int] = []
        pending: List[int] = []
        while len(chosen) < k[i]:
            if not stream:
                stream = [int(c) for c in rng.permutation(np.arange(1, NUM_CLASSES))]
            c = stream.pop(0)
            (pending if c in chosen else chosen).append(c)
        stream = pending + stream
        if len(chosen) < 4 and rng.random() < 0.3:
            partners = [CONFUSABLE[c] for c in chosen
                        if c in CONFUSABLE and CONFUSABLE[c] not in chosen]
            if partners:
                chosen.append(partners[int(rng.integers(len(partners)))])
        anchors = [c for c in chosen if c not in seen] if ensure_coverage else []
        seen.update(chosen)
        out.append((chosen, anchors))
    return out


def render_voc_sample(rng: np.random.Generator, size: int, classes: Sequence[int],
                      anchors: Sequence[int] = (),
                      void_bands: bool = True) -> Tuple[np.ndarray, np.ndarray, bool]:
    """One VOC-like sample: (RGB uint8 (size, size, 3), label uint8 (size, size), anchors_ok)."""
    img, _ = _background(rng, size)
    scale = size / 96.0
    # faint class-like patches that stay background (hard negatives)
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            c = int(rng.integers(1, NUM_CLASSES))
            shp = _random_shape(rng, 'blob', rng.uniform(0, size), rng.uniform(0, size),
                                rng.uniform(0.08, 0.16) * size, rng.uniform(0.7, 1.5),
                                rng.uniform(0, np.pi))
            alpha = _blur(_shape_coverage(shp, size, size, 2), 1.5 * max(scale, 0.5))
            img = _composite(img, _class_texture(rng, c, size), alpha * rng.uniform(0.25, 0.5))
    objects = []
    for c in classes:
        for j in range(1 if rng.random() < 0.7 else 2):
            objects.append((c, c in anchors and j == 0))
    order = [i for i in rng.permutation(len(objects)) if not objects[i][1]]
    order += [i for i in rng.permutation(len(objects)) if objects[i][1]]  # anchors on top
    label = np.zeros((size, size), np.uint8)
    inst = np.zeros((size, size), np.int32)
    for n, i in enumerate(order, start=1):
        c, is_anchor = objects[i]
        st = CLASS_STYLES[c]
        radius = st.radius * size * rng.uniform(0.75, 1.3)
        angle = rng.normal(0, 0.2) if st.upright else rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0.15, 0.85, 2) * size
        aspect = st.aspect * rng.uniform(0.8, 1.25)
        shp = _random_shape(rng, st.shape, cy, cx, radius, aspect, angle)
        sigma = rng.uniform(0.6, 1.5) * max(scale, 0.5)
        alpha = _blur(_shape_coverage(shp, size, size, 2), sigma)
        opacity = 1.0 if rng.random() > 0.12 else rng.uniform(0.5, 0.8)
        img = _composite(img, _class_texture(rng, c, size), alpha * opacity)
        lab = c
        if not is_anchor and rng.random() < _LABEL_FLIP_PROB:
            lab = CONFUSABLE.get(c, int(rng.integers(1, NUM_CLASSES)))
        region = alpha >= rng.uniform(0.4, 0.6)
        label[region] = lab
        inst[region] = n
    img = _photometric(rng, img)
    if void_bands:  # VOC's 'void' outlines: 1-2 px of 255 on most object boundaries
        for n in range(1, len(order) + 1):
            region = inst == n
            if region.any() and rng.random() < _BAND_PROB:
                r_out, r_in = [(1, 0), (0, 1), (1, 1)][int(rng.integers(3))]
                label[_dilate(region, r_out) & ~_erode(region, r_in)] = IGNORE_INDEX
    min_px = max(4, int(0.004 * size * size))
    ok = all(int((label == c).sum()) >= min_px for c in anchors)
    return img, label, ok


def generate_voc_aug(root: str, *, num_train: int = DEFAULTS['voc_train'],
                     num_val: int = DEFAULTS['voc_val'], size: int = DEFAULTS['size'],
                     seed: int = DEFAULTS['seed'], train_fraction: float = 0.4,
                     verbose: bool = False) -> Dict[str, List[str]]:
    """Write a PASCAL VOC 2012 + SBD-aug style dataset under ``<root>/VOCdevkit/VOC2012``.

    The ``num_train`` training ids are split into ``train.txt`` (``round(train_fraction *
    num_train)``, at least 1) and ``aug.txt`` (the rest, disjoint from train.txt); ``num_val`` ids
    go to ``val.txt``. Returns ``{'train': [...], 'aug': [...], 'val': [...]}`` (sorted ids, as
    written to the lists).
    """
    assert num_train >= 1 and num_val >= 0 and size >= 16
    t0 = time.time()
    voc = osp.join(root, 'VOCdevkit', 'VOC2012')
    dirs = {k: osp.join(voc, k) for k in ('JPEGImages', 'SegmentationClass',
                                          'SegmentationClassAug', 'ImageSets')}
    dirs['ImageSets'] = osp.join(dirs['ImageSets'], 'Segmentation')
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng([seed, _VOC_STREAM])
    ids = _voc_ids(rng, num_train + num_val)
    train_all, val = ids[:num_train], ids[num_train:]
    n_tr = min(num_train, max(1, int(round(train_fraction * num_train))))
    splits = {'train': sorted(train_all[:n_tr]), 'aug': sorted(train_all[n_tr:]),
              'val': sorted(val)}
    plan: Dict[str, Tuple[List[int], List[int]]] = {}
    for names, cover in ((train_all, True), (val, False)):
        for name, p in zip(names, _schedule_classes(rng, len(names), cover)):
            plan[name] = p
    aug = set(splits['aug'])
    all_ids = sorted(ids)
    for idx, name in enumerate(all_ids):
        classes, anchors = plan[name]
        for attempt in range(20):
            rng_i = np.random.default_rng([seed, _VOC_STREAM, idx, attempt])
            img, label, ok = render_voc_sample(rng_i, size, classes, anchors,
                                               void_bands=name not in aug)
            if ok:
                break
        _save_jpeg(img, osp.join(dirs['JPEGImages'], name + '.jpg'))
        Image.fromarray(label).save(osp.join(dirs['SegmentationClassAug'], name + '.png'))
        if name not in aug:  # VOC's own palette annotations exist for train/val ids only
            pal = Image.fromarray(label)
            pal.putpalette(VOC_PALETTE.tobytes())
            pal.save(osp.join(dirs['SegmentationClass'], name + '.png'))
        if verbose and ((idx + 1) % 50 == 0 or idx + 1 == len(all_ids)):
            print(f'[voc] {idx + 1}/{len(all_ids)} images', flush=True)
    for split, names in splits.items():
        with open(osp.join(dirs['ImageSets'], split + '.txt'), 'w') as f:
            f.writelines(n + '\n' for n in names)
    if verbose:
        counts = ', '.join(f'{k} {len(v)}' for k, v in splits.items())
        print(f'[voc] {voc}: {counts} '
              f'({size}x{size}) in {time.time() - t0:.1f}s', flush=True)
    return splits


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
    img, bg_mean = _background(rng, size)
    scale = max(size / 96.0, 0.5)
    bg_hue = _rgb_to_hsv(bg_mean)[0]
    tex_freq = 96.0 / size

    def random_pattern() -> np.ndarray:
        return _pattern(rng, _random_kind(rng, _PATTERNS), rng.uniform(0.05, 0.3) * tex_freq,
                        rng.uniform(0, 180), size, size)

    def random_shape(cy: float, cx: float, radius: float) -> dict:
        return _random_shape(rng, _random_kind(rng, _SHAPES), cy, cx, radius,
                             rng.uniform(0.5, 2.0), rng.uniform(0, np.pi))

    # background clutter: low-contrast patches in the background's own colours
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0, size, 2)
        shp = random_shape(cy, cx, rng.uniform(0.06, 0.15) * size)
        col = np.clip(bg_mean + rng.normal(0, 30, 3), 0, 255)
        tex = _two_tone(random_pattern(), col, col * rng.uniform(0.6, 0.9), 0.8)
        alpha = _blur(_shape_coverage(shp, size, size, 2), scale) * rng.uniform(0.3, 0.7)
        img = _composite(img, tex, alpha)

    def salient_texture(ambiguous: bool) -> np.ndarray:
        if ambiguous:  # close to the background: only texture and edges separate it
            a = np.clip(bg_mean + rng.normal(0, 22, 3), 0, 255)
        else:
            a = _hsv(bg_hue + 0.5 + rng.normal(0, 0.12), rng.uniform(0.45, 1.0),
                     rng.uniform(0.45, 1.0))
        b = np.clip(a * rng.uniform(0.5, 0.85) + rng.normal(0, 15, 3), 0, 255)
        tex = _two_tone(random_pattern(), a, b, rng.uniform(0.4, 1.0))
        return tex + rng.normal(0, 5, (size, size, 1))

    if rng.random() < 0.25:  # a contrasting but non-salient object at the border (label 0)
        side = rng.uniform(0.04, 0.12) * size
        along = rng.uniform(0, size)
        cy, cx = (side, along) if rng.random() < 0.5 else (along, side)
        if rng.random() < 0.5:
            cy, cx = size - cy, size - cx
        shp = random_shape(cy, cx, rng.uniform(0.08, 0.14) * size)
        alpha = _blur(_shape_coverage(shp, size, size, 2), scale) * rng.uniform(0.7, 1.0)
        img = _composite(img, salient_texture(False), alpha)
    ambiguous = rng.random() < 0.2
    cover = np.zeros((size, size))
    for j in range(1 if rng.random() < 0.7 else 2):
        radius = (rng.uniform(0.18, 0.34) if j == 0 else rng.uniform(0.12, 0.22)) * size
        cy, cx = np.clip(rng.normal(0.5, 0.13, 2), 0.25, 0.75) * size
        cov = _shape_coverage(random_shape(cy, cx, radius), size, size, 4)
        alpha = _blur(cov, rng.uniform(0.4, 1.0) * scale)
        img = _composite(img, salient_texture(ambiguous and j == 0), alpha)
        cover = np.maximum(cover, cov)
    mask = np.round(cover * 255)
    mask[cover <= 0.12] = 0
    mask[cover >= 0.88] = 255
    return _photometric(rng, img), mask.astype(np.uint8)


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
            _save_jpeg(img, osp.join(img_dir, name + '.jpg'))
            Image.fromarray(mask).save(osp.join(mask_dir, name + '.png'))
            if verbose and ((idx + 1) % 50 == 0 or idx + 1 == n):
                print(f'[duts] {split}: {idx + 1}/{n} images', flush=True)
        out[split] = names
    if verbose:
        print(f'[duts] {osp.join(root, "DUTS")}: DUTS-TR {num_train}, DUTS-TE {num_test} '
              f'({size}x{size}) in {time.time() - t0:.1f}s', flush=True)
    return out


def generate_all(root: str, *, voc_train: int = DEFAULTS['voc_train'],
                 voc_val: int = DEFAULTS['voc_val'], duts_train: int = DEFAULTS['duts_train'],
                 duts_test: int = DEFAULTS['duts_test'], size: int = DEFAULTS['size'],
                 seed: int = DEFAULTS['seed'], only: str | None = None,
                 verbose: bool = False) -> Dict[str, Dict[str, List[str]]]:
    """Generate both datasets (or ``only='voc'`` / ``only='duts'``) under ``root``.

    Returns ``{'voc': generate_voc_aug(...), 'duts': generate_duts(...)}`` (the generated ones)."""
    assert only in (None, 'voc', 'duts'), only
    out = {}
    if only in (None, 'voc'):
        out['voc'] = generate_voc_aug(root, num_train=voc_train, num_val=voc_val, size=size,
                                      seed=seed, verbose=verbose)
    if only in (None, 'duts'):
        out['duts'] = generate_duts(root, num_train=duts_train, num_test=duts_test, size=size,
                                    seed=seed, verbose=verbose)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='data/demo', help='root folder (gets VOCdevkit/ and DUTS/)')
    p.add_argument('--voc-train', type=int, default=DEFAULTS['voc_train'],
                   help='number of training ids (train.txt + aug.txt)')
    p.add_argument('--voc-val', type=int, default=DEFAULTS['voc_val'])
    p.add_argument('--duts-train', type=int, default=DEFAULTS['duts_train'])
    p.add_argument('--duts-test', type=int, default=DEFAULTS['duts_test'])
    p.add_argument('--size', type=int, default=DEFAULTS['size'], help='square image side (px)')
    p.add_argument('--seed', type=int, default=DEFAULTS['seed'])
    p.add_argument('--only', choices=('voc', 'duts'), default=None)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    generate_all(args.out, voc_train=args.voc_train, voc_val=args.voc_val,
                 duts_train=args.duts_train, duts_test=args.duts_test, size=args.size,
                 seed=args.seed, only=args.only, verbose=True)
    print(f'[generate_demo_data] done in {time.time() - t0:.1f}s -> {args.out}', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
