"""The corruption table: shape/dtype kept, the image changes, strength grows with severity, draws are fixed."""
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from calibseg.datasets.transforms.corruptions import (
    CORRUPTION_FAMILIES,
    SEVERITY_TABLE,
    corrupt_image,
    corruption_seed,
    valid_corruptions,
)

NAMES = list(SEVERITY_TABLE)
# smallest mean absolute difference (grey levels) at severity 1 on the test images; weak-by-design ones lower
FLOOR = {'impulse_noise': 0.8, 'sun_flare': 0.5}


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A textured, colourful image with a flat object (so blur, noise and colour changes all show)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(xx / 7.0), 128 + 90 * np.cos(yy / 9.0), 128 + 80 * np.sin((xx + yy) / 13.0)],
                   -1)
    img[h // 4:h // 2, w // 4:w // 2] = [30, 200, 60]
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


IMAGES = [_image(96, 96, 0), _image(64, 128, 1)]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def test_table_has_four_families_and_at_least_twelve_photometric_corruptions():
    assert set(CORRUPTION_FAMILIES) == {'noise', 'blur', 'weather', 'digital'}
    assert len(NAMES) >= 12
    assert 'elastic_transform' not in NAMES  # geometric: moves labels
    for name, (_, params) in SEVERITY_TABLE.items():
        assert len(params) == 5, name


@pytest.mark.parametrize('name', NAMES)
def test_every_severity_keeps_shape_and_dtype_changes_the_image_and_grows_monotonically(name):
    for k, img in enumerate(IMAGES):
        diffs = []
        for severity in range(1, 6):
            out = corrupt_image(img, name, severity, seed=corruption_seed(f'img{k}', name))
            assert out.shape == img.shape and out.dtype == np.uint8
            diffs.append(_mad(out, img))
        assert diffs[0] > FLOOR.get(name, 1.0), (name, diffs)
        assert all(a <= b + 1e-9 for a, b in zip(diffs, diffs[1:])), (name, diffs)


@pytest.mark.parametrize('name', NAMES)
def test_severity_five_is_hard_but_not_destroyed(name):
    """The corrupted image still carries the scene: its grey levels correlate with the clean image's."""
    img = IMAGES[0]
    out = corrupt_image(img, name, 5, seed=7)
    grey, grey_out = img.astype(np.float64).mean(-1).ravel(), out.astype(np.float64).mean(-1).ravel()
    assert grey_out.std() > 3.0
    assert np.corrcoef(grey, grey_out)[0, 1] > 0.5


def test_same_seed_same_image_other_seed_other_noise():
    img = IMAGES[0]
    a = corrupt_image(img, 'gaussian_noise', 3, seed=11)
    assert np.array_equal(a, corrupt_image(img, 'gaussian_noise', 3, seed=11))
    assert not np.array_equal(a, corrupt_image(img, 'gaussian_noise', 3, seed=12))


def test_channel_order_bgr_is_rgb_reversed():
    img = IMAGES[1]
    rgb = corrupt_image(img[..., ::-1].copy(), 'saturate', 2, seed=0, channel_order='rgb')
    bgr = corrupt_image(img, 'saturate', 2, seed=0, channel_order='bgr')
    assert np.array_equal(rgb[..., ::-1], bgr)


def _digest() -> str:
    h = hashlib.sha256()
    for name in NAMES:
        for severity in (1, 5):
            h.update(corrupt_image(IMAGES[1], name, severity, seed=corruption_seed('a.jpg', name)).tobytes())
    return h.hexdigest()


def test_draws_are_identical_in_another_process():
    code = ('import sys; sys.path.insert(0, "tests/test_datasets/test_transforms"); '
            'import test_corruptions as t; print(t._digest())')
    other = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == _digest()


def test_seed_is_stable_and_depends_on_every_field():
    assert corruption_seed('a.jpg', 'fog') == corruption_seed('a.jpg', 'fog')
    seeds = {corruption_seed('a.jpg', 'fog'), corruption_seed('b.jpg', 'fog'), corruption_seed('a.jpg', 'snow'),
             corruption_seed('a.jpg', 'fog', seed=1)}
    assert len(seeds) == 4


@pytest.mark.parametrize('bad, match', [
    (dict(corruption='elastic_transform', severity=1), 'valid corruptions: gaussian_noise, shot_noise'),
    (dict(corruption='fog', severity=0), 'severity must be an integer in 1, 2, 3, 4, 5'),
    (dict(corruption='fog', severity=6), 'severity must be an integer'),
    (dict(corruption='fog', severity=2.0), 'severity must be an integer'),
])
def test_bad_names_and_severities_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        corrupt_image(IMAGES[0], seed=0, **bad)


def test_bad_images_are_refused():
    with pytest.raises(ValueError, match=r'\(H, W, 3\) uint8'):
        corrupt_image(IMAGES[0].astype(np.float32), 'fog', 1, seed=0)
    with pytest.raises(ValueError, match=r'\(H, W, 3\) uint8'):
        corrupt_image(IMAGES[0][..., 0], 'fog', 1, seed=0)


def test_valid_corruptions_expands_all_and_families():
    assert valid_corruptions(['all']) == NAMES
    assert valid_corruptions(['blur', 'fog', 'defocus_blur']) == CORRUPTION_FAMILIES['blur'] + ['fog']
    with pytest.raises(ValueError, match='unknown corruption'):
        valid_corruptions(['fgo'])
