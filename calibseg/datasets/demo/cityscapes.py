"""A small synthetic Cityscapes copy in the real on-disk layout that mmseg's ``CityscapesDataset`` reads unchanged.

Layout under ``<root>/cityscapes/`` (mmseg's ``configs/_base_/datasets/cityscapes.py`` with
``data_root=<root>/cityscapes``)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png        RGB
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png    mode 'L': train ids 0..18, 255

Train ids are Cityscapes' 19 evaluation classes (0 road, 1 sidewalk, 2 building, 3 wall, 4 fence, 5 pole,
6 traffic light, 7 traffic sign, 8 vegetation, 9 terrain, 10 sky, 11 person, 12 rider, 13 car, 14 truck, 15 bus,
16 train, 17 motorcycle, 18 bicycle) and 255 for unlabelled pixels (here the ego vehicle's bonnet at the bottom
and thin bands on some object outlines, as in the real annotations).

Generative model: a street seen from a car. Sky above a random horizon, a skyline of buildings (some walls)
and tree crowns (vegetation), a road trapezoid towards a vanishing point with sidewalks (and sometimes terrain
and a fence) on both sides, poles carrying traffic lights or signs, and 2-5 traffic participants (cars, trucks,
buses, trams, persons, riders with bicycles or motorcycles) on or next to the road, smaller towards the horizon;
later objects occlude earlier ones. Every class has a base colour with per-image jitter and per-pixel texture
noise; car/truck/bus and person/rider share colours and differ mostly in shape and size, so the classes are
not separable. The object classes follow a balanced schedule, so every train id occurs in the training split.

Determinism: every image has its own ``numpy.random.Generator`` seeded by ``(seed, stream, split, index)``, with
a stream of its own (so generating Cityscapes does not change the VOC/DUTS bytes); PNG is written by Pillow.
"""
from __future__ import annotations

import os
import os.path as osp
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ['CITYSCAPES_CLASSES', 'CITIES', 'generate_cityscapes', 'render_cityscapes_sample']

CITYSCAPES_CLASSES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light', 'traffic sign',
                      'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'train',
                      'motorcycle', 'bicycle')
IGNORE_INDEX = 255
CITIES = dict(train=('aachen', 'bochum', 'cologne'), val=('frankfurt', 'lindau'))
_STREAM = 0x435459  # 'CTY'
_SPLIT_CODE = dict(train=0, val=1)

# base colours (RGB) per train id; confusable groups share a colour family
_COLOURS = np.array([
    (128, 64, 128), (232, 35, 244), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (225, 40, 70), (0, 0, 142), (0, 10, 120), (0, 30, 130), (0, 80, 100), (40, 0, 200), (119, 11, 32)],
    dtype=np.float64)
# objects: (train id, height / (distance to horizon), aspect width/height)
_OBJECTS = {11: (0.9, 0.4), 12: (0.95, 0.5), 13: (0.45, 2.0), 14: (0.8, 2.2), 15: (0.9, 2.6), 16: (0.9, 3.5),
            17: (0.45, 1.3), 18: (0.4, 1.2)}
_SCHEDULE = (13, 11, 14, 12, 15, 17, 16, 18)


def _paint(label: np.ndarray, mask: np.ndarray, class_id: int) -> None:
    label[mask] = class_id


def render_cityscapes_sample(rng: np.random.Generator, height: int, width: int,
                             objects: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """One ``(H, W, 3)`` uint8 image and its ``(H, W)`` uint8 train-id map with the given object classes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    label = np.full((height, width), 10, dtype=np.uint8)  # sky
    horizon = rng.uniform(0.35, 0.5) * height
    vanish_x = rng.uniform(0.35, 0.65) * width

    # skyline: buildings and walls, tree crowns
    x = 0.0
    while x < width:
        block = rng.uniform(0.12, 0.3) * width
        top = horizon - rng.uniform(0.1, 0.35) * height
        _paint(label, (xx >= x) & (xx < x + block) & (yy >= top) & (yy < horizon + 2),
               3 if rng.random() < 0.15 else 2)
        x += block
    for _ in range(rng.integers(1, 4)):
        cy, cx = horizon - rng.uniform(0.0, 0.15) * height, rng.uniform(0, width)
        ry, rx = rng.uniform(0.06, 0.14) * height, rng.uniform(0.05, 0.12) * width
        _paint(label, ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1, 8)

    # ground: terrain or sidewalk at the sides, the road towards the vanishing point
    ground = yy >= horizon
    depth = np.clip((yy - horizon) / (height - horizon), 0, 1)
    _paint(label, ground, 9 if rng.random() < 0.4 else 1)
    half_road = (0.05 + rng.uniform(0.45, 0.6) * depth) * width
    walk = (0.03 + 0.25 * depth) * width
    _paint(label, ground & (np.abs(xx - vanish_x) < half_road + walk), 1)
    _paint(label, ground & (np.abs(xx - vanish_x) < half_road), 0)
    if rng.random() < 0.5:  # a fence along one side
        side = rng.choice([-1, 1])
        edge = vanish_x + side * (half_road + walk)
        _paint(label, ground & (side * (xx - edge) > 0) & (yy < horizon + 0.12 * height), 4)

    # poles with a traffic light or a sign
    for _ in range(rng.integers(1, 3)):
        px = rng.uniform(0.05, 0.95) * width
        base = horizon + rng.uniform(0.05, 0.25) * height
        top = horizon - rng.uniform(0.15, 0.3) * height
        _paint(label, (np.abs(xx - px) < max(0.6, 0.008 * width)) & (yy >= top) & (yy < base), 5)
        box_w = rng.uniform(0.015, 0.03) * width
        _paint(label, (np.abs(xx - px) < box_w) & (yy >= top) & (yy < top + 2.2 * box_w),
               6 if rng.random() < 0.5 else 7)

    # traffic participants, far ones first (near ones occlude them)
    outlines = np.zeros((height, width), dtype=bool)
    placed = sorted(((rng.uniform(0.15, 1.0), c) for c in objects), key=lambda t: t[0])
    for dist, class_id in placed:
        rel_h, aspect = _OBJECTS[class_id]
        bottom = horizon + dist * (height - horizon) * 0.85
        obj_h = max(3.0, rel_h * (bottom - horizon) * rng.uniform(0.8, 1.2))
        obj_w = obj_h * aspect * rng.uniform(0.85, 1.15)
        on_road = class_id in (13, 14, 15, 16, 17, 18) or rng.random() < 0.3
        spread = (0.05 + 0.5 * dist) * width * (0.8 if on_road else 1.6)
        cx = vanish_x + rng.uniform(-1, 1) * spread
        if class_id in (11, 12):  # an ellipse body
            mask = ((yy - (bottom - obj_h / 2)) / (obj_h / 2)) ** 2 + ((xx - cx) / (obj_w / 2)) ** 2 < 1
        else:  # a box with a narrower cabin on top for road vehicles
            mask = (np.abs(xx - cx) < obj_w / 2) & (yy < bottom) & (yy >= bottom - 0.65 * obj_h)
            mask |= (np.abs(xx - cx) < 0.35 * obj_w) & (yy < bottom) & (yy >= bottom - obj_h)
        if class_id == 12:  # a rider sits on a bicycle or motorcycle
            bike = (np.abs(xx - cx) < 0.6 * obj_w) & (yy < bottom + 0.3 * obj_h) & (yy >= bottom - 0.1 * obj_h)
            _paint(label, bike, 18 if rng.random() < 0.5 else 17)
        _paint(label, mask, class_id)
        outlines &= ~mask  # an occluded outline is no boundary any more
        if rng.random() < 0.5:  # a 1 px unlabelled band on the outline
            inner = mask.copy()
            inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
            outlines |= mask & ~inner

    image = _COLOURS[label] * rng.uniform(0.85, 1.15, size=(1, 1, 3))
    image += rng.normal(0.0, 12.0, size=image.shape)  # texture noise
    shade = 1.0 + 0.25 * (yy / height - 0.5) * rng.uniform(-1, 1)
    image *= shade[..., None]
    label[outlines] = IGNORE_INDEX
    bonnet = yy > height * (1 - rng.uniform(0.05, 0.1)) + 0.04 * height * ((xx / width - 0.5) * 2) ** 2
    label[bonnet] = IGNORE_INDEX
    image[bonnet] = (30, 30, 35)
    return np.clip(image, 0, 255).round().astype(np.uint8), label


def generate_cityscapes(root: str, *, seed: int = 0, num_train: int = 12, num_val: int = 4, height: int = 64,
                        width: int = 128, verbose: bool = False) -> Dict[str, List[str]]:
    """Write the synthetic Cityscapes copy under ``<root>/cityscapes``.

    Args:
        root: output folder (the copy goes to ``<root>/cityscapes``).
        seed: random seed; a seed gives the same files.
        num_train, num_val: images per split (spread over the split's cities), ``>= 1``.
        height, width: image size, at least 32x32 (Cityscapes' aspect is 1:2).
        verbose: print a summary.

    Returns:
        ``{'train': names, 'val': names}``: sorted ``<city>_<seq>_<frame>`` stems.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     names = generate_cityscapes(root, num_train=2, num_val=1)
        >>> names['val']
        ['frankfurt_000000_000019']
    """
    for name, value, minimum in (('num_train', num_train, 1), ('num_val', num_val, 1), ('height', height, 32),
                                 ('width', width, 32)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')
    start = time.time()
    out: Dict[str, List[str]] = {}
    for split, count in (('train', num_train), ('val', num_val)):
        code = _SPLIT_CODE[split]
        names = []
        for idx in range(count):
            rng = np.random.default_rng([seed, _STREAM, code, idx])
            city = CITIES[split][idx % len(CITIES[split])]
            stem = f'{city}_{idx // len(CITIES[split]):06d}_{19 + idx:06d}'
            first = idx % len(_SCHEDULE)
            objects = [_SCHEDULE[first], _SCHEDULE[(first + 3) % len(_SCHEDULE)]]
            objects += [int(c) for c in rng.choice(_SCHEDULE, size=rng.integers(0, 4))]
            image, label = render_cityscapes_sample(rng, height, width, objects)
            img_dir = osp.join(root, 'cityscapes', 'leftImg8bit', split, city)
            ann_dir = osp.join(root, 'cityscapes', 'gtFine', split, city)
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(ann_dir, exist_ok=True)
            Image.fromarray(image).save(osp.join(img_dir, stem + '_leftImg8bit.png'))
            Image.fromarray(label).save(osp.join(ann_dir, stem + '_gtFine_labelTrainIds.png'))
            names.append(stem)
        out[split] = sorted(names)
    if verbose:
        print(f'[cityscapes] {osp.join(root, "cityscapes")}: train {num_train}, val {num_val} ({height}x{width}) '
              f'in {time.time() - start:.1f}s', flush=True)
    return out
