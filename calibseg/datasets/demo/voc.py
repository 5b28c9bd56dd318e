"""PASCAL VOC 2012 + SBD-augmentation layout of the demo data (mmseg's ``PascalVOCDataset``).

Under ``<root>/VOCdevkit/VOC2012/`` (mmseg's ``configs/_base_/datasets/pascal_voc12_aug.py``)::

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
"""
from __future__ import annotations

import os
import os.path as osp
import time
from typing import Dict, List, NamedTuple, Sequence, Tuple

import numpy as np
from PIL import Image

from .common import (
    DEFAULTS,
    background,
    blur,
    composite,
    dilate,
    erode,
    make_shape,
    photometric,
    save_jpeg,
    shape_coverage,
    texture_map,
    two_tone,
)

VOC_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
               'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')
NUM_CLASSES = len(VOC_CLASSES)  # 21, class 0 is the background
IGNORE_INDEX = 255
# the VOC random stream (independent of the other datasets': generating one does not change another)
_VOC_STREAM = 0x564F43

__all__ = ['VOC_CLASSES', 'NUM_CLASSES', 'IGNORE_INDEX', 'VOC_PALETTE', 'CLASS_STYLES', 'CONFUSABLE', 'ClassStyle',
           'voc_palette', 'render_voc_sample', 'generate_voc_aug']


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


def _class_texture(rng: np.random.Generator, c: int, size: int) -> np.ndarray:
    st = CLASS_STYLES[c]
    bright = rng.uniform(0.85, 1.12)
    a = (np.array(st.color_a, float) + rng.normal(0, 14, 3)) * bright
    b = (np.array(st.color_b, float) + rng.normal(0, 14, 3)) * bright
    freq = st.freq * 96.0 / size * rng.uniform(0.85, 1.15)
    m = texture_map(rng, st.pattern, freq, st.angle + rng.normal(0, 12), size, size)
    tex = two_tone(m, a, b, rng.uniform(0.6, 1.0))
    # shading across the object and a little luminance grain
    g = np.linspace(-1, 1, size)
    shade = 1 + rng.uniform(-0.1, 0.1) * g[:, None] + rng.uniform(-0.1, 0.1) * g[None, :]
    return tex * shade[..., None] + rng.normal(0, 5, (size, size, 1))



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
    img, _ = background(rng, size)
    scale = size / 96.0
    # faint class-like patches that stay background (hard negatives)
    if rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            c = int(rng.integers(1, NUM_CLASSES))
            shp = make_shape(rng, 'blob', rng.uniform(0, size), rng.uniform(0, size),
                                rng.uniform(0.08, 0.16) * size, rng.uniform(0.7, 1.5),
                                rng.uniform(0, np.pi))
            alpha = blur(shape_coverage(shp, size, size, 2), 1.5 * max(scale, 0.5))
            img = composite(img, _class_texture(rng, c, size), alpha * rng.uniform(0.25, 0.5))
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
        shp = make_shape(rng, st.shape, cy, cx, radius, aspect, angle)
        sigma = rng.uniform(0.6, 1.5) * max(scale, 0.5)
        alpha = blur(shape_coverage(shp, size, size, 2), sigma)
        opacity = 1.0 if rng.random() > 0.12 else rng.uniform(0.5, 0.8)
        img = composite(img, _class_texture(rng, c, size), alpha * opacity)
        lab = c
        if not is_anchor and rng.random() < _LABEL_FLIP_PROB:
            lab = CONFUSABLE.get(c, int(rng.integers(1, NUM_CLASSES)))
        region = alpha >= rng.uniform(0.4, 0.6)
        label[region] = lab
        inst[region] = n
    img = photometric(rng, img)
    if void_bands:  # VOC's 'void' outlines: 1-2 px of 255 on most object boundaries
        for n in range(1, len(order) + 1):
            region = inst == n
            if region.any() and rng.random() < _BAND_PROB:
                r_out, r_in = [(1, 0), (0, 1), (1, 1)][int(rng.integers(3))]
                label[dilate(region, r_out) & ~erode(region, r_in)] = IGNORE_INDEX
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
        save_jpeg(img, osp.join(dirs['JPEGImages'], name + '.jpg'))
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
