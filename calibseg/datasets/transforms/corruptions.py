"""Photometric, label-preserving image corruptions at five severities (ImageNet-C style).

The corruptions follow the families and names of ImageNet-C (Hendrycks & Dietterich, ICLR 2019) as used for
segmentation robustness benchmarks (Cityscapes-C / VOC-C, Kamann & Rother, CVPR 2020): noise, blur, weather and
digital. Geometric corruptions (``elastic_transform``) move the labels and are left out. Each corruption is built on
albumentations where it has the operation (OpenCV and numpy otherwise), with every random parameter fixed by the
severity: only the pattern (noise samples, positions of drops, blur direction) is random, drawn from a generator
seeded by the caller (:func:`corruption_seed`: per image and corruption, shared by the five severities), so a
corrupted test set is the same on every run and every process and an image's corruption only grows in strength
from one severity to the next.

Severity table (:data:`SEVERITY_TABLE`; one monotone scale per corruption, severity 5 hard but not destroyed).
Images are uint8; "σ" and "amount" are fractions of the 0–255 range.

================  =========  ========================================================  ============================
name              family     parameter (severities 1 … 5)                              built on
================  =========  ========================================================  ============================
gaussian_noise    noise      σ = .04, .06, .08, .11, .14                               ``A.GaussNoise``
shot_noise        noise      photons/px λ = 60, 30, 16, 9, 5 (Poisson(λx)/λ)           numpy
impulse_noise     noise      amount = .01, .02, .035, .055, .08                        ``A.SaltAndPepper``
speckle_noise     noise      σ = .08, .12, .17, .23, .30 (x + x·N(0, σ))               numpy
defocus_blur      blur       disc radius = 2, 3, 4, 5, 7 px                            ``A.Defocus``
motion_blur       blur       kernel = 5, 7, 9, 13, 17 px                               ``A.MotionBlur``
gaussian_blur     blur       σ = 1, 1.5, 2, 2.75, 3.5 px                               ``A.GaussianBlur``
zoom_blur         blur       max zoom = 1.06, 1.11, 1.16, 1.21, 1.26                   ``A.ZoomBlur``
glass_blur        blur       (σ, max shift, iterations) = (.5,1,1) … (1.1,3,2)         ``A.GlassBlur``
fog               weather    fog coefficient = .2, .35, .5, .65, .8                    ``A.RandomFog``
snow              weather    snow point share = .1, .15, .22, .3, .4 (brightness 1.5)  ``A.RandomSnow``
frost             weather    frost cover = .15, .25, .35, .45, .55                     OpenCV (procedural ice)
spatter           weather    cutout threshold = .70, .66, .62, .58, .54                ``A.Spatter``
rain              weather    (drops/px, length, dimming) = (.004,10,.95) … (.03,30,.75) OpenCV (streaks)
sun_flare         weather    source radius = .25, .35, .45, .55, .65 × image width     ``A.RandomSunFlare``
brightness        digital    V += .1, .2, .3, .4, .5 (HSV value in [0, 1])             OpenCV
contrast          digital    c = .65, .5, .38, .28, .2 ((x − mean)·c + mean)           numpy
saturate          digital    S ·= 1.5, 2, 2.5, 3, 3.5 (HSV saturation)                 OpenCV
jpeg_compression  digital    quality = 40, 25, 15, 10, 7                               ``A.ImageCompression``
pixelate          digital    cell = 2, 3, 4, 5, 6 px (cell means)                      numpy
================  =========  ========================================================  ============================
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')  # albumentations checks PyPI for updates at import otherwise
import albumentations as A  # noqa: E402

__all__ = ['CORRUPTION_FAMILIES', 'SEVERITY_TABLE', 'corrupt_image', 'corruption_seed', 'check_corruption',
           'check_severity', 'corruption_names', 'valid_corruptions']

Severities = Tuple[object, object, object, object, object]

# name -> (family, parameters for severities 1..5)
SEVERITY_TABLE: Dict[str, Tuple[str, Severities]] = {
    'gaussian_noise': ('noise', (.04, .06, .08, .11, .14)),
    'shot_noise': ('noise', (60, 30, 16, 9, 5)),
    'impulse_noise': ('noise', (.01, .02, .035, .055, .08)),
    'speckle_noise': ('noise', (.08, .12, .17, .23, .30)),
    'defocus_blur': ('blur', (2, 3, 4, 5, 7)),
    'motion_blur': ('blur', (5, 7, 9, 13, 17)),
    'gaussian_blur': ('blur', (1.0, 1.5, 2.0, 2.75, 3.5)),
    'zoom_blur': ('blur', (1.06, 1.11, 1.16, 1.21, 1.26)),
    'glass_blur': ('blur', ((.5, 1, 1), (.6, 1, 2), (.7, 2, 1), (.9, 2, 2), (1.1, 3, 2))),
    'fog': ('weather', (.2, .35, .5, .65, .8)),
    'snow': ('weather', (.1, .15, .22, .3, .4)),
    'frost': ('weather', (.15, .25, .35, .45, .55)),
    'spatter': ('weather', (.70, .66, .62, .58, .54)),
    'rain': ('weather', ((.004, 10, .95), (.008, 14, .9), (.013, 18, .85), (.02, 24, .8), (.03, 30, .75))),
    'sun_flare': ('weather', (.25, .35, .45, .55, .65)),
    'brightness': ('digital', (.1, .2, .3, .4, .5)),
    'contrast': ('digital', (.65, .5, .38, .28, .2)),
    'saturate': ('digital', (1.5, 2.0, 2.5, 3.0, 3.5)),
    'jpeg_compression': ('digital', (40, 25, 15, 10, 7)),
    'pixelate': ('digital', (2, 3, 4, 5, 6)),
}

CORRUPTION_FAMILIES: Dict[str, List[str]] = {}
for _name, (_family, _) in SEVERITY_TABLE.items():
    CORRUPTION_FAMILIES.setdefault(_family, []).append(_name)


def corruption_names() -> List[str]:
    """Every corruption name, in table order (noise, blur, weather, digital)."""
    return list(SEVERITY_TABLE)


def check_corruption(name: str) -> str:
    """Return ``name`` if it is a known corruption, else raise naming the valid ones."""
    if name not in SEVERITY_TABLE:
        raise ValueError(f'unknown corruption {name!r}; valid corruptions: {", ".join(SEVERITY_TABLE)}')
    return name


def check_severity(severity: int) -> int:
    """Return ``severity`` if it is an int in 1…5, else raise."""
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= int(severity) <= 5:
        raise ValueError(f'severity must be an integer in 1, 2, 3, 4, 5; got {severity!r}')
    return int(severity)


def corruption_seed(key: str, corruption: str, seed: int = 0) -> int:
    """A 32-bit seed from (image key, corruption, seed offset), the same in every process and run.

    The severity is deliberately not part of it: all five severities of an image share one random pattern (noise
    samples, drop positions, blur direction) and differ only in strength, so strength grows monotonically with
    the severity image by image. Python's ``hash`` is salted per process, so the seed comes from SHA-256.
    """
    digest = hashlib.sha256(f'{key}|{corruption}|{int(seed)}'.encode()).digest()
    return int.from_bytes(digest[:4], 'little')


# --------------------------------------------------------------------------------------------- the operations
def _albu(transform: A.BasicTransform, rgb: np.ndarray, seed: int) -> np.ndarray:
    pipeline = A.Compose([transform], seed=seed)
    return pipeline(image=rgb)['image']


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _gaussian_noise(rgb, sigma, rng, seed):
    return _albu(A.GaussNoise(std_range=(sigma, sigma), mean_range=(0.0, 0.0), per_channel=True, p=1.0), rgb, seed)


def _shot_noise(rgb, photons, rng, seed):
    x = rgb.astype(np.float64) / 255.0
    return _to_uint8(rng.poisson(x * photons) / photons * 255.0)


def _impulse_noise(rgb, amount, rng, seed):
    return _albu(A.SaltAndPepper(amount=(amount, amount), salt_vs_pepper=(0.5, 0.5), p=1.0), rgb, seed)


def _speckle_noise(rgb, sigma, rng, seed):
    x = rgb.astype(np.float64)
    return _to_uint8(x + x * rng.normal(0.0, sigma, size=x.shape))


def _defocus_blur(rgb, radius, rng, seed):
    return _albu(A.Defocus(radius=(radius, radius), alias_blur=(0.1, 0.1), p=1.0), rgb, seed)


def _motion_blur(rgb, kernel, rng, seed):
    return _albu(A.MotionBlur(blur_limit=(kernel, kernel), allow_shifted=False, p=1.0), rgb, seed)


def _gaussian_blur(rgb, sigma, rng, seed):
    return _albu(A.GaussianBlur(blur_limit=0, sigma_limit=(sigma, sigma), p=1.0), rgb, seed)


def _zoom_blur(rgb, factor, rng, seed):
    return _albu(A.ZoomBlur(max_factor=(factor, factor), step_factor=(0.02, 0.02), p=1.0), rgb, seed)


def _glass_blur(rgb, params, rng, seed):
    sigma, max_delta, iterations = params
    return _albu(A.GlassBlur(sigma=sigma, max_delta=max_delta, iterations=iterations, mode='fast', p=1.0), rgb, seed)


def _fog(rgb, coef, rng, seed):
    return _albu(A.RandomFog(fog_coef_range=(coef, coef), alpha_coef=0.1, p=1.0), rgb, seed)


def _snow(rgb, share, rng, seed):
    return _albu(A.RandomSnow(snow_point_range=(share, share), brightness_coeff=1.5, method='bleach', p=1.0), rgb,
                 seed)


def _frost(rgb, cover, rng, seed):
    """Blend a procedural ice texture: bright, crystalline low-frequency noise with thin streaks."""
    h, w = rgb.shape[:2]
    base = rng.random((max(h // 8, 2), max(w // 8, 2)))
    texture = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.random((h, w)), (0, 0), 1.0)
    ice = np.clip(0.6 * texture + 0.4 * fine, 0.0, 1.0)
    ice = (ice ** 0.7 * 255.0)[..., None] * np.array([0.92, 0.97, 1.0])  # bluish white (RGB)
    x = rgb.astype(np.float64)
    return _to_uint8((1.0 - cover) * x + cover * 1.15 * ice)


def _spatter(rgb, threshold, rng, seed):
    return _albu(A.Spatter(mean=(0.65, 0.65), std=(0.3, 0.3), gauss_sigma=(2.0, 2.0),
                           cutout_threshold=(threshold, threshold), intensity=(0.6, 0.6), mode='rain', p=1.0),
                 rgb, seed)


def _rain(rgb, params, rng, seed):
    """Slanted bright streaks at a density of ``drops`` per pixel over a dimmed (overcast) image."""
    drops, length, dimming = params
    h, w = rgb.shape[:2]
    length = max(2, int(round(length * min(h, w) / 256)))
    count = int(round(drops * h * w))
    layer = np.zeros((h, w), np.float32)
    xs = rng.integers(0, w, size=count)
    ys = rng.integers(0, h, size=count)
    slant = rng.uniform(-0.25, 0.25)
    for x0, y0 in zip(xs.tolist(), ys.tolist()):
        cv2.line(layer, (x0, y0), (int(round(x0 + slant * length)), y0 + length), 1.0, 1)
    layer = cv2.blur(layer, (3, 3))[..., None]
    x = rgb.astype(np.float64) * dimming
    return _to_uint8(x * (1.0 - 0.7 * layer) + 200.0 * 0.7 * layer)


def _sun_flare(rgb, radius, rng, seed):
    h, w = rgb.shape[:2]
    return _albu(A.RandomSunFlare(flare_roi=(0.3, 0.1, 0.7, 0.4), src_radius=max(4, int(radius * w)),
                                  num_flare_circles_range=(6, 6), angle_range=(0.25, 0.25), p=1.0), rgb, seed)


def _brightness(rgb, shift, rng, seed):
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float64)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift * 255.0, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _contrast(rgb, factor, rng, seed):
    x = rgb.astype(np.float64)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return _to_uint8((x - mean) * factor + mean)


def _saturate(rgb, factor, rng, seed):
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float64)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _jpeg_compression(rgb, quality, rng, seed):
    return _albu(A.ImageCompression(compression_type='jpeg', quality_range=(quality, quality), p=1.0), rgb, seed)


def _pixelate(rgb, block, rng, seed):
    """Replace each ``block``×``block`` cell by its mean (integer cells, so strength grows with the block)."""
    h, w = rgb.shape[:2]
    ph, pw = -h % block, -w % block
    x = np.pad(rgb.astype(np.float64), ((0, ph), (0, pw), (0, 0)), mode='edge')
    cells = x.reshape((h + ph) // block, block, (w + pw) // block, block, 3).mean(axis=(1, 3))
    return _to_uint8(np.repeat(np.repeat(cells, block, axis=0), block, axis=1)[:h, :w])


_OPERATIONS: Dict[str, Callable] = {name: globals()[f'_{name}'] for name in SEVERITY_TABLE}


def corrupt_image(img: np.ndarray, corruption: str, severity: int, *, seed: int, channel_order: str = 'bgr'
                  ) -> np.ndarray:
    """Apply one corruption at one severity to a uint8 image.

    Args:
        img: ``(H, W, 3)`` uint8 image (mmseg loads BGR).
        corruption: a name of :data:`SEVERITY_TABLE`.
        severity: 1 … 5.
        seed: seeds every random draw (see :func:`corruption_seed`); the same seed gives the same image.
        channel_order: ``'bgr'`` (mmseg's ``LoadImageFromFile``) or ``'rgb'``.

    Returns:
        The corrupted image, same shape and dtype.

    Example:
        >>> import numpy as np
        >>> img = np.full((32, 48, 3), 128, np.uint8)
        >>> out = corrupt_image(img, 'gaussian_noise', 3, seed=0)
        >>> out.shape, out.dtype, bool((out != img).any())
        ((32, 48, 3), dtype('uint8'), True)
    """
    check_corruption(corruption)
    severity = check_severity(severity)
    if channel_order not in ('bgr', 'rgb'):
        raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError('corrupt_image needs an (H, W, 3) uint8 image, got '
                         f'{type(img).__name__} {getattr(img, "dtype", "")} {getattr(img, "shape", "")}')
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f'image too small to corrupt: {img.shape}')
    rgb = np.ascontiguousarray(img[..., ::-1] if channel_order == 'bgr' else img)
    params = SEVERITY_TABLE[corruption][1][severity - 1]
    rng = np.random.default_rng(seed)
    out = _OPERATIONS[corruption](rgb, params, rng, int(seed) % (2 ** 32))
    out = np.ascontiguousarray(out, dtype=np.uint8)
    if out.shape != img.shape:  # albumentations keeps the size; a change would be a bug here, not the user's
        raise RuntimeError(f'{corruption} changed the image shape {img.shape} -> {out.shape}')
    return np.ascontiguousarray(out[..., ::-1]) if channel_order == 'bgr' else out


def valid_corruptions(names: Sequence[str]) -> List[str]:
    """Expand ``['all']`` / family names to corruption names, checking each (the analysis command's argument)."""
    out: List[str] = []
    for name in names:
        if name == 'all':
            out.extend(SEVERITY_TABLE)
        elif name in CORRUPTION_FAMILIES:
            out.extend(CORRUPTION_FAMILIES[name])
        else:
            out.append(check_corruption(name))
    return list(dict.fromkeys(out))
