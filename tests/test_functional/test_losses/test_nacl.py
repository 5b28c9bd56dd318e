import math

import numpy as np
import pytest
import torch

from calibseg.functional.losses import fused, nacl_loss
from calibseg.functional.losses import utils as loss_utils

IGNORE = 255


def kernel_weight(kernel, di, dj, sigma):
    """Unnormalised kernel entry (the renormalisation over valid neighbours makes the scale irrelevant)."""
    return 1.0 if kernel == 'mean' else math.exp(-(di * di + dj * dj) / (2 * sigma ** 2))


def reference_nacl(logits, target, alpha=0.1, size=3, kernel='mean', sigma=1.0, distance='l1',
                   border='renormalise', class_weight=None):
    """Per-pixel CE + alpha * mean_k |tau_k - z_k| by explicit loops (nan at ignored pixels)."""
    z = logits.detach().double().numpy()
    labels = target.numpy()
    num_classes, height, width = z.shape[1], labels.shape[1], labels.shape[2]
    half = size // 2
    out = np.full(labels.shape, np.nan)
    for n, h, w in np.ndindex(*labels.shape):
        y = int(labels[n, h, w])
        if y == IGNORE:
            continue
        counts = [0.0] * num_classes
        for di in range(-half, half + 1):
            for dj in range(-half, half + 1):
                hh, ww = h + di, w + dj
                if not (0 <= hh < height and 0 <= ww < width):
                    if border == 'renormalise':
                        continue
                    hh, ww = min(max(hh, 0), height - 1), min(max(ww, 0), width - 1)
                neighbour = int(labels[n, hh, ww])
                if neighbour != IGNORE:
                    counts[neighbour] += kernel_weight(kernel, di, dj, sigma)
        total = sum(counts)
        row = z[n, :, h, w]
        ce = math.log(sum(math.exp(v) for v in row)) - row[y]
        if class_weight is not None:
            ce *= class_weight[y]
        gaps = [counts[k] / total - row[k] for k in range(num_classes)]
        gaps = [abs(g) if distance == 'l1' else g * g for g in gaps]
        out[n, h, w] = ce + alpha * sum(gaps) / num_classes
    return out


def patchy_batch(make_batch, h=7, w=6, seed=0, dtype=torch.float32):
    """A batch with an ignored block touching the border and scattered ignored pixels."""
    logits, target = make_batch(n=2, c=4, h=h, w=w, scale=2.0, ignore_frac=0.15, seed=seed, dtype=dtype)
    target[0, :3, :2] = IGNORE
    target[1, 4:, 3:] = IGNORE
    return logits, target


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('border', ['renormalise', 'replicate'])
@pytest.mark.parametrize('options', [dict(), dict(kernel='gaussian', sigma=0.8, distance='l2', alpha=0.5),
                                     dict(size=5, alpha=1.0), dict(size=1)])
def test_matches_reference(make_batch, reduce_reference, reduction, border, options):
    logits, target = patchy_batch(make_batch)
    options = dict(options)
    size = options.pop('size', 3)
    loss = nacl_loss(logits, target, kernel_size=size, border=border, reduction=reduction, **options)
    expected = reduce_reference(reference_nacl(logits, target, size=size, border=border, **options),
                                target, None, reduction)
    np.testing.assert_allclose(loss.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_weights_match_reference(make_batch, reduce_reference):
    logits, target = patchy_batch(make_batch, h=4, w=3)
    class_weight = [0.5, 1.0, 2.0, 0.0]
    weight = torch.rand(2, 4, 3, generator=torch.Generator().manual_seed(1)) + 0.5
    loss = nacl_loss(logits, target, weight=weight, class_weight=class_weight, alpha=0.3)
    expected = reduce_reference(reference_nacl(logits, target, alpha=0.3, class_weight=class_weight), target,
                                weight, 'mean')
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)


def test_by_hand():
    # 1x2 image, labels [0, 1], mean 3x3 kernel renormalised in the image: tau = (1/2, 1/2) at both pixels.
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 1.5]]]], dtype=torch.float64)
    target = torch.tensor([[[0, 1]]])
    ce = torch.nn.functional.cross_entropy(logits, target)
    penalty = (abs(0.5 - 2.0) + abs(0.5 - 0.5) + abs(0.5 + 1.0) + abs(0.5 - 1.5)) / 4
    torch.testing.assert_close(nacl_loss(logits, target, alpha=0.1), ce + 0.1 * penalty)
    # The authors' zero padding would count 6 out-of-image class-0 neighbours per pixel; ours never does.
    uniform = torch.ones(1, 1, 2, dtype=torch.long)
    z = torch.tensor([[[[0.0, 0.0]], [[1.0, 1.0]]]], dtype=torch.float64)  # equal to tau = onehot(1)
    torch.testing.assert_close(nacl_loss(z, uniform, alpha=1.0),
                               torch.nn.functional.cross_entropy(z, uniform))


def test_ignored_neighbours_never_count(make_batch):
    # Class 2 on the left, ignored on the right: only class 2 ever enters tau (next to the ignored region and at
    # the borders, under both rules), so the penalty is |onehot(2) - z| everywhere.
    logits, _ = make_batch(n=1, c=4, h=5, w=6, scale=2.0, dtype=torch.float64)
    target = torch.full((1, 5, 6), IGNORE)
    target[:, :, :3] = 2
    onehot = torch.nn.functional.one_hot(torch.full((1, 5, 6), 2), 4).movedim(-1, 1).double()
    per_pixel = (onehot - logits).abs().mean(dim=1)[target != IGNORE].mean()
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE)
    for border in ('renormalise', 'replicate'):
        torch.testing.assert_close(nacl_loss(logits, target, alpha=0.7, border=border), ce + 0.7 * per_pixel)


def test_gradients(make_batch):
    logits, target = patchy_batch(make_batch, h=5, w=4, dtype=torch.float64)
    for options in (dict(), dict(distance='l2', kernel='gaussian', border='replicate')):
        leaf = logits.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda z, options=options: nacl_loss(z, target, alpha=0.5, **options),
                                        (leaf,))
    leaf = logits.clone().requires_grad_()
    nacl_loss(leaf, target).backward()
    assert torch.equal(leaf.grad.movedim(1, -1)[target == IGNORE],
                       torch.zeros(int((target == IGNORE).sum()), 4, dtype=torch.float64))


@pytest.mark.parametrize('chunk', [1000, 168, 50, 7], ids=['two-images', 'one-image', 'runs-of-2-rows', 'rows'])
def test_row_blocks_match_reference(make_batch, monkeypatch, chunk):
    # The loss visits the logits in blocks of whole rows (CPU) and rebuilds tau per block in the backward pass;
    # each block's windows reach into its neighbours' rows. 2 images of 4 x 7 x 6 logits (168 each).
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', chunk)
    logits, target = patchy_batch(make_batch, dtype=torch.float64)
    for options in (dict(border='renormalise'), dict(border='replicate', size=5, kernel='gaussian', distance='l2')):
        options = dict(options)
        size = options.pop('size', 3)
        loss = nacl_loss(logits, target, alpha=0.5, kernel_size=size, reduction='none', **options)
        expected = reference_nacl(logits, target, alpha=0.5, size=size, **options)
        np.testing.assert_allclose(loss.numpy(), np.nan_to_num(expected), rtol=1e-10, atol=1e-12)


def test_row_blocks_gradcheck(make_batch, monkeypatch):
    # 2 images of 4 x 5 x 4 logits in blocks of 2 rows: the hand-written backward across block boundaries.
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', 32)
    logits, target = patchy_batch(make_batch, h=5, w=4, dtype=torch.float64)
    for options in (dict(), dict(distance='l2', kernel='gaussian', border='replicate')):
        leaf = logits.clone().requires_grad_()
        assert torch.autograd.gradcheck(lambda z, options=options: nacl_loss(z, target, alpha=0.5, **options),
                                        (leaf,))


@pytest.mark.parametrize('options', [dict(), dict(border='replicate', kernel='gaussian', distance='l2')])
def test_device_path_reads_nothing_back(make_batch, monkeypatch, options):
    # The accelerator's path (forced on CPU: the whole batch as one block) gives the same values and gradients
    # as the CPU's row blocks and reads no value back to the host (every such Tensor method raises).
    logits, target = patchy_batch(make_batch, dtype=torch.float64)
    cpu = logits.clone().requires_grad_()
    nacl_loss(cpu, target, **options).backward()
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', 7)  # ignored on the device path
    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', True)

    def no_readback(*args, **kwargs):
        raise AssertionError('value read back to the host')

    leaf = logits.clone().requires_grad_()
    with monkeypatch.context() as patch:
        for method in ('item', 'tolist', 'nonzero', 'cpu', 'numpy', '__bool__', '__int__', '__float__'):
            patch.setattr(torch.Tensor, method, no_readback)
        loss = nacl_loss(leaf, target, **options)
        loss.backward()
    torch.testing.assert_close(loss, nacl_loss(logits, target, **options))
    torch.testing.assert_close(leaf.grad, cpu.grad)


def test_common_behaviour(check_common):
    check_common(nacl_loss)
    check_common(nacl_loss, alpha=1.0, kernel='gaussian', distance='l2', border='replicate')


def test_empty_batch():
    for shape in [(0, 3, 4, 4), (2, 3, 0, 4)]:
        logits = torch.zeros(shape, requires_grad=True)
        loss = nacl_loss(logits, torch.zeros(shape[:1] + shape[2:], dtype=torch.long))
        assert loss.item() == 0.0
        loss.backward()


@pytest.mark.parametrize('name, value', [('alpha', -0.1), ('alpha', 'x'), ('kernel_size', 2), ('kernel_size', 0),
                                         ('kernel', 'svls'), ('sigma', 0.0), ('distance', 'l3'),
                                         ('border', 'zeros')])
def test_bad_options(make_batch, name, value):
    logits, target = make_batch()
    with pytest.raises(ValueError, match=name):
        nacl_loss(logits, target, **{name: value})
