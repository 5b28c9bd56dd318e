"""Drawing primitives shared by the demo-data generators: noise, shapes, textures, compositing, JPEG.

Everything takes an explicit ``numpy.random.Generator`` (no global RNG), so a seed gives the same arrays; images
are written by Pillow (JPEG quality 80, 4:2:0), hence byte-identical files for a seed on a given numpy/Pillow.
"""
from __future__ import annotations

import colorsys
from typing import Tuple

import numpy as np
from PIL import Image

JPEG_QUALITY = 80
# default sizes of the embedded demo data (``make data``). 32 VOC training images: the demo's 600 iterations of
# batch 8 are 150 epochs, so the cross-entropy model over-fits and is clearly over-confident on the 60 val images.
DEFAULTS = dict(voc_train=32, voc_val=60, duts_train=120, duts_test=40, size=96, seed=0)
PATTERNS = ('stripes', 'checks', 'spots', 'grain')
SHAPES = ('ellipse', 'polygon', 'rect', 'blob')

__all__ = ['JPEG_QUALITY', 'DEFAULTS', 'PATTERNS', 'SHAPES', 'blur', 'smooth_noise', 'dilate', 'erode',
           'hsv_color', 'rgb_to_hsv', 'make_shape', 'shape_coverage', 'texture_map', 'two_tone', 'background',
           'composite', 'photometric', 'save_jpeg']


# ---------------------------------------------------------------------------------- primitives
def blur(a: np.ndarray, sigma: float) -> np.ndarray:
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


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
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


def dilate(m: np.ndarray, r: int) -> np.ndarray:
    for _ in range(r):
        p = np.pad(m, 1, mode='constant', constant_values=False)
        h, w = m.shape
        out = np.zeros_like(m)
        for dy in range(3):
            for dx in range(3):
                out |= p[dy:dy + h, dx:dx + w]
        m = out
    return m


def erode(m: np.ndarray, r: int) -> np.ndarray:
    return ~dilate(~m, r) if r > 0 else m


def hsv_color(h: float, s: float, v: float) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return np.array(rgb) * 255.0


def rgb_to_hsv(rgb: np.ndarray) -> Tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(np.clip(rgb, 0, 255) / 255.0))


# ---------------------------------------------------------------------------------- shapes
def make_shape(rng: np.random.Generator, kind: str, cy: float, cx: float, radius: float,
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


def shape_coverage(shape: dict, h: int, w: int, ss: int) -> np.ndarray:
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
def texture_map(rng: np.random.Generator, pattern: str, freq: float, angle_deg: float, h: int,
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
        n = smooth_noise(rng, h, w, max(2.0, freq * max(h, w)))
        return 1.0 / (1.0 + np.exp(-4.0 * (n - 0.4)))
    n = blur(rng.standard_normal((h, w)), max(0.5, 0.25 / freq))  # grain
    return 0.5 + 0.5 * np.tanh(1.5 * n / (n.std() + 1e-6))


def two_tone(m: np.ndarray, a: np.ndarray, b: np.ndarray, contrast: float) -> np.ndarray:
    m = 0.5 + contrast * (m - 0.5)
    return a[None, None, :] * (1 - m[..., None]) + b[None, None, :] * m[..., None]


def background(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Class-0 texture: two colours mixed by smooth noise, faint stripes and grain.

    Returns (image, mean colour)."""
    hue = rng.uniform(0, 1)
    c1 = hsv_color(hue, rng.uniform(0.0, 0.45), rng.uniform(0.3, 0.85))
    c2 = np.clip(c1 + rng.normal(0, 40, 3), 0, 255)
    m = 1.0 / (1.0 + np.exp(-1.5 * smooth_noise(rng, size, size, rng.uniform(1.5, 4.5))))
    img = two_tone(m, c1, c2, 1.0)
    stripes = texture_map(rng, 'stripes', rng.uniform(0.04, 0.3) * 96.0 / size, rng.uniform(0, 180),
                       size, size)
    img += (rng.uniform(0, 14) * (stripes - 0.5))[..., None]
    img += 6.0 * smooth_noise(rng, size, size, size / 6.0)[..., None]
    return img, (c1 + c2) / 2


def composite(img: np.ndarray, tex: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return img * (1 - a) + tex * a


def photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Per-image brightness, colour cast, illumination gradient and pixel noise -> uint8."""
    size = img.shape[0]
    gain = rng.uniform(0.85, 1.12) * (1 + rng.normal(0, 0.05, 3))
    th = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) - 0.5
    grad = 1 + rng.uniform(0, 0.25) * (xx * np.cos(th) + yy * np.sin(th))
    img = img * gain[None, None, :] * grad[..., None] + rng.normal(0, 4, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def save_jpeg(img: np.ndarray, path: str) -> None:
    Image.fromarray(img).save(path, format='JPEG', quality=JPEG_QUALITY, subsampling=2,
                              optimize=False)
