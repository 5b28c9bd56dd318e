import math

import numpy as np
import pytest
import torch

from calibseg.functional.losses import fused, svls_loss
from calibseg.functional.losses import utils as loss_utils

IGNORE = 255


def svls_weight(di, dj, size, sigma):
    """Unnormalised SVLS kernel entry: a Gaussian, the centre replaced by the sum of the others."""
    if di == dj == 0:
        half = size // 2
        return sum(math.exp(-(a * a + b * b) / (2 * sigma ** 2))
                   for a in range(-half, half + 1) for b in range(-half, half + 1) if (a, b) != (0, 0))
    return math.exp(-(di * di + dj * dj) / (2 * sigma ** 2))


def reference_svls(logits, target, size=3, sigma=1.0, border='renormalise', class_weight=None):
    """Per-pixel SVLS by explicit loops over pixels, neighbours and classes (nan at ignored pixels)."""
    z = logits.detach().double().numpy()
    labels = target.numpy()
    num_classes, height, width = z.shape[1], labels.shape[1], labels.shape[2]
    half = size // 2
    out = np.full(labels.shape, np.nan)
    for n, h, w in np.ndindex(*labels.shape):
        y = int(labels[n, h, w])
        if y == IGNORE:
            continue
        soft = [0.0] * num_classes
        for di in range(-half, half + 1):
            for dj in range(-half, half + 1):
                hh, ww = h + di, w + dj
                if not (0 <= hh < height and 0 <= ww < width):
                    if border == 'renormalise':
                        continue
                    hh, ww = min(max(hh, 0), height - 1), min(max(ww, 0), width - 1)
                neighbour = int(labels[n, hh, ww])
                if neighbour != IGNORE:
                    soft[neighbour] += svls_weight(di, dj, size, sigma)
        total = sum(soft)
        row = z[n, :, h, w]
        log_z = math.log(sum(math.exp(v) for v in row))
        loss = -sum(soft[c] / total * (row[c] - log_z) for c in range(num_classes))
        out[n, h, w] = loss * (1.0 if class_weight is None else class_weight[y])
    return out


def patchy_batch(make_batch, h=7, w=6, seed=0, dtype=torch.float32):
    """A batch with an ignored block touching the border and scattered ignored pixels."""
    logits, target = make_batch(n=2, c=4, h=h, w=w, scale=3.0, ignore_frac=0.15, seed=seed, dtype=dtype)
    target[0, :3, :2] = IGNORE
    target[1, 4:, 3:] = IGNORE
    return logits, target


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('border', ['renormalise', 'replicate'])
@pytest.mark.parametrize('size, sigma', [(3, 1.0), (5, 0.7)])
def test_matches_reference(make_batch, reduce_reference, reduction, border, size, sigma):
    logits, target = patchy_batch(make_batch)
    loss = svls_loss(logits, target, kernel_size=size, sigma=sigma, border=border, reduction=reduction)
    expected = reduce_reference(reference_svls(logits, target, size, sigma, border), target, None, reduction)
    np.testing.assert_allclose(loss.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_weights_match_reference(make_batch, reduce_reference):
    logits, target = patchy_batch(make_batch, h=4, w=3)
    class_weight = [0.5, 1.0, 2.0, 0.0]
    weight = torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(1)) + 0.5
    loss = svls_loss(logits, target, weight=weight, class_weight=class_weight)
    expected = reduce_reference(reference_svls(logits, target, class_weight=class_weight), target, weight, 'mean')
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)


def test_two_pixels_by_hand():
    # Labels [0, 1] in a 1x2 image: each pixel sees itself (centre, weight 4e + 4c) and the other (edge e).
    edge, corner = math.exp(-0.5), math.exp(-1.0)
    centre = 4 * edge + 4 * corner
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 1.5]]]])
    target = torch.tensor([[[0, 1]]])
    log_p = torch.log_softmax(logits.double(), dim=1)[0, :, 0]
    own, other = centre / (centre + edge), edge / (centre + edge)
    left = -(own * log_p[0, 0] + other * log_p[1, 0])
    right = -(other * log_p[0, 1] + own * log_p[1, 1])
    assert svls_loss(logits, target).item() == pytest.approx(((left + right) / 2).item(), rel=1e-6)
    # replicate: the out-of-image neighbours repeat the edge labels (checked against the loop reference).
    np.testing.assert_allclose(svls_loss(logits, target, border='replicate', reduction='none').numpy(),
                               reference_svls(logits, target, border='replicate'), rtol=1e-6)


def test_uniform_regions_and_ignored_neighbours_give_cross_entropy(make_batch):
    # Class 2 on the left, ignored on the right: no other class ever enters a target, so SVLS == CE,
    # at the image borders (both rules) and next to the ignored region.
    logits, _ = make_batch(n=1, c=4, h=5, w=6, scale=2.0)
    target = torch.full((1, 5, 6), IGNORE)
    target[:, :, :3] = 2
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE)
    for border in ('renormalise', 'replicate'):
        torch.testing.assert_close(svls_loss(logits, target, border=border), ce)


def test_gradients(make_batch):
    logits, target = patchy_batch(make_batch, h=5, w=4, dtype=torch.float64)
    for border in ('renormalise', 'replicate'):
        leaf = logits.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda z, border=border: svls_loss(z, target, border=border), (leaf,))
    # The gradient is p - y~ at every valid pixel, 0 at ignored ones (mean over P valid pixels).
    leaf = logits.clone().requires_grad_()
    svls_loss(leaf, target, reduction='sum').backward()
    assert torch.equal(leaf.grad.movedim(1, -1)[target == IGNORE], torch.zeros(int((target == IGNORE).sum()), 4,
                                                                             dtype=torch.float64))
    torch.testing.assert_close(leaf.grad.sum(dim=1), torch.zeros_like(target, dtype=torch.float64))


@pytest.mark.parametrize('chunk', [1000, 168, 50, 7], ids=['two-images', 'one-image', 'runs-of-2-rows', 'rows'])
def test_row_blocks_match_reference(make_batch, monkeypatch, chunk):
    # The loss visits the logits in blocks of whole rows (CPU); each block's windows reach into its neighbours'
    # rows. 2 images of 4 x 7 x 6 logits (168 each): whole images, runs of 2 rows, single rows.
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', chunk)
    logits, target = patchy_batch(make_batch, dtype=torch.float64)
    for border, size in [('renormalise', 3), ('replicate', 5)]:
        loss = svls_loss(logits, target, kernel_size=size, sigma=1.3, border=border, reduction='none')
        expected = reference_svls(logits, target, size, 1.3, border)
        np.testing.assert_allclose(loss.numpy(), np.nan_to_num(expected), rtol=1e-10, atol=1e-12)


def test_row_blocks_gradcheck(make_batch, monkeypatch):
    # 2 images of 4 x 5 x 4 logits in blocks of 2 rows: the hand-written backward across block boundaries.
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', 32)
    logits, target = patchy_batch(make_batch, h=5, w=4, dtype=torch.float64)
    leaf = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: svls_loss(z, target, border='replicate'), (leaf,))


@pytest.mark.parametrize('options', [dict(), dict(border='replicate', kernel_size=5)])
def test_device_path_reads_nothing_back(make_batch, monkeypatch, options):
    # The accelerator's path (forced on CPU: the whole batch as one block) gives the same values and gradients
    # as the CPU's row blocks and reads no value back to the host (every such Tensor method raises).
    logits, target = patchy_batch(make_batch, dtype=torch.float64)
    cpu = logits.clone().requires_grad_()
    svls_loss(cpu, target, **options).backward()
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', 7)  # ignored on the device path
    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', True)

    def no_readback(*args, **kwargs):
        raise AssertionError('value read back to the host')

    leaf = logits.clone().requires_grad_()
    with monkeypatch.context() as patch:
        for method in ('item', 'tolist', 'nonzero', 'cpu', 'numpy', '__bool__', '__int__', '__float__'):
            patch.setattr(torch.Tensor, method, no_readback)
        loss = svls_loss(leaf, target, **options)
        loss.backward()
    torch.testing.assert_close(loss, svls_loss(logits, target, **options))
    torch.testing.assert_close(leaf.grad, cpu.grad)


def test_common_behaviour(check_common):
    check_common(svls_loss)
    check_common(svls_loss, kernel_size=5, sigma=2.0, border='replicate')


def test_empty_batch():
    for shape in [(0, 3, 4, 4), (2, 3, 0, 4)]:
        logits = torch.zeros(shape, requires_grad=True)
        loss = svls_loss(logits, torch.zeros(shape[:1] + shape[2:], dtype=torch.long))
        assert loss.item() == 0.0
        loss.backward()


@pytest.mark.parametrize('name, value', [('kernel_size', 1), ('kernel_size', 4), ('kernel_size', 3.0),
                                         ('sigma', 0.0), ('sigma', -1.0), ('sigma', float('inf')),
                                         ('border', 'zeros')])
def test_bad_options(make_batch, name, value):
    logits, target = make_batch()
    with pytest.raises(ValueError, match=name):
        svls_loss(logits, target, **{name: value})


def test_needs_images(make_batch):
    logits, target = make_batch()
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        svls_loss(logits[:, :, 0], target[:, 0])
