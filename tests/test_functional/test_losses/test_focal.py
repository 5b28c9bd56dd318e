import math

import numpy as np
import pytest
import torch
from loss_reference import logsumexp, per_pixel_reference

from calibseg.functional.losses import softmax_focal_loss

IGNORE = 255


def reference_focal(logits, target, gamma, class_weight=None):
    """Per-pixel focal loss by explicit loops (float64 numpy); nan at ignored pixels."""
    gammas = np.broadcast_to(np.asarray(gamma, dtype=np.float64), target.shape)

    def pixel(row, y, where):
        log_p = row[y] - logsumexp(row)
        loss = -((1.0 - math.exp(log_p)) ** gammas[where]) * log_p
        return loss * (1.0 if class_weight is None else class_weight[y])
    return per_pixel_reference(logits, target, pixel)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('gamma', [0.0, 0.5, 3.0])
@pytest.mark.parametrize('weighted', [False, True])
def test_matches_reference(make_batch, pixel_weight, reduce_reference, reduction, gamma, weighted):
    logits, target = make_batch()
    class_weight = [0.5, 1.0, 2.0, 1.5, 0.0] if weighted else None
    weight = pixel_weight if weighted else None
    loss = softmax_focal_loss(logits, target, gamma=gamma, weight=weight,
                              class_weight=class_weight, reduction=reduction)
    expected = reduce_reference(reference_focal(logits, target, gamma, class_weight), target,
                                weight, reduction)
    np.testing.assert_allclose(loss.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_defaults_and_gamma_zero_is_cross_entropy(make_batch):
    logits, target = make_batch()
    expected = np.nanmean(reference_focal(logits, target, 3.0))
    np.testing.assert_allclose(softmax_focal_loss(logits, target).item(), expected, rtol=1e-5)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(softmax_focal_loss(logits, target, gamma=0.0), ce)


def test_per_pixel_and_per_image_gamma(make_batch, reduce_reference):
    logits, target = make_batch()
    gen = torch.Generator().manual_seed(3)
    pixel_gamma = torch.rand(target.shape, generator=gen) * 5
    loss = softmax_focal_loss(logits, target, gamma=pixel_gamma, reduction='none')
    expected = reduce_reference(reference_focal(logits, target, pixel_gamma.numpy()), target,
                                None, 'none')
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-6)

    image_gamma = torch.tensor([1.0, 4.0]).view(2, 1, 1)
    loss = softmax_focal_loss(logits, target, gamma=image_gamma)
    expected = np.nanmean(reference_focal(logits, target, image_gamma.expand_as(target).numpy()))
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    with pytest.raises(ValueError, match='does not broadcast'):
        softmax_focal_loss(logits, target, gamma=torch.ones(3, 1, 1))


def test_gradcheck(make_batch):
    logits, target = make_batch(dtype=torch.float64)
    logits.requires_grad_()
    gamma = torch.rand(target.shape, dtype=torch.float64).add(0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda z: softmax_focal_loss(z, target, gamma=3.0), (logits,), fast_mode=True)
    # The loss is differentiable w.r.t. a per-pixel gamma too (gamma-Net trains through it).
    assert torch.autograd.gradcheck(
        lambda z, g: softmax_focal_loss(z, target, gamma=g), (logits, gamma), fast_mode=True)
    assert torch.autograd.gradgradcheck(
        lambda z: softmax_focal_loss(z, target, gamma=3.0), (logits,), fast_mode=True)


def test_saturated_logits_have_finite_gradients():
    # p_y rounds to exactly 1 in float32: (1 - p)^gamma must not give nan for gamma < 1.
    logits = torch.tensor([[[[200.0]], [[0.0]], [[-3.0]]]], requires_grad=True)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    gamma = torch.full((1, 1, 1), 0.5, requires_grad=True)
    loss = softmax_focal_loss(logits, target, gamma=gamma)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(gamma.grad).all()


def test_common_behaviour(check_common):
    check_common(softmax_focal_loss)
    check_common(softmax_focal_loss, gamma=torch.full((2, 4, 3), 2.0))


@pytest.mark.parametrize('gamma', [-0.1, float('nan'), float('inf'), '3', True])
def test_bad_gamma(make_batch, gamma):
    logits, target = make_batch()
    with pytest.raises(ValueError, match='gamma'):
        softmax_focal_loss(logits, target, gamma=gamma)


def test_bad_gamma_tensor(make_batch):
    logits, target = make_batch()
    with pytest.raises(ValueError, match=r'gamma must be finite and >= 0.*-1\.0'):
        softmax_focal_loss(logits, target, gamma=torch.full((2, 4, 3), -1.0))


def test_class_weight_validation(make_batch):
    logits, target = make_batch()
    with pytest.raises(ValueError, match='class_weight has 2 entries'):
        softmax_focal_loss(logits, target, class_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match='class_weight must hold'):
        softmax_focal_loss(logits, target, class_weight=[1.0, -2.0, 1.0, 1.0, 1.0])


def test_avg_factor(make_batch):
    logits, target = make_batch()
    total = softmax_focal_loss(logits, target, reduction='sum')
    torch.testing.assert_close(softmax_focal_loss(logits, target, avg_factor=10.0),
                               total / (10.0 + torch.finfo(torch.float32).eps))
    with pytest.raises(ValueError, match='avg_factor'):
        softmax_focal_loss(logits, target, reduction='sum', avg_factor=10.0)
