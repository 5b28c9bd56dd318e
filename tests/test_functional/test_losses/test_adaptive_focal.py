import math

import numpy as np
import pytest
import torch
from loss_reference import logsumexp, per_pixel_reference

from calibseg.functional.losses import adaptive_focal_loss, softmax_focal_loss

IGNORE = 255


def reference_flsd(logits, target, gamma_hard=5.0, gamma_easy=3.0, threshold=0.2,
                   class_weight=None):
    """Per-pixel FLSD by explicit loops, choosing gamma per pixel like the reference code."""
    def pixel(row, y, _):
        log_p = row[y] - logsumexp(row)
        p = math.exp(log_p)
        gamma = gamma_hard if p < threshold else gamma_easy
        return -((1.0 - p) ** gamma) * log_p * (1.0 if class_weight is None else class_weight[y])
    return per_pixel_reference(logits, target, pixel)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('weighted', [False, True])
def test_matches_reference(make_batch, pixel_weight, reduce_reference, reduction, weighted):
    logits, target = make_batch()
    class_weight = [0.5, 1.0, 2.0, 1.5, 0.0] if weighted else None
    weight = pixel_weight if weighted else None
    loss = adaptive_focal_loss(logits, target, weight=weight, class_weight=class_weight,
                               reduction=reduction)
    expected = reduce_reference(reference_flsd(logits, target, class_weight=class_weight),
                                target, weight, reduction)
    np.testing.assert_allclose(loss.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_both_branches_are_used_and_options(make_batch):
    logits, target = make_batch(scale=2.0, h=6, w=6)
    log_p = torch.log_softmax(logits, 1).gather(1, target.clamp_max(4).unsqueeze(1)).squeeze(1)
    valid = target != IGNORE
    hard = log_p.exp() < 0.2
    assert (hard & valid).any() and (~hard & valid).any()
    expected = np.nanmean(reference_flsd(logits, target, gamma_hard=4.0, gamma_easy=1.0,
                                         threshold=0.5))
    loss = adaptive_focal_loss(logits, target, gamma_hard=4.0, gamma_easy=1.0, threshold=0.5)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    # Equal gammas reduce to the focal loss.
    torch.testing.assert_close(adaptive_focal_loss(logits, target, gamma_hard=3.0),
                               softmax_focal_loss(logits, target, gamma=3.0))


def test_gamma_choice_is_detached(make_batch):
    # The gradient is the focal-loss gradient with each pixel's gamma held fixed.
    logits, target = make_batch(dtype=torch.float64)
    leaf = logits.clone().requires_grad_()
    adaptive_focal_loss(leaf, target).backward()
    with torch.no_grad():
        log_p = torch.log_softmax(logits, 1).gather(
            1, target.clamp_max(4).unsqueeze(1)).squeeze(1)
        gamma = torch.where(log_p.exp() < 0.2, 5.0, 3.0).double()
    fixed = logits.clone().requires_grad_()
    softmax_focal_loss(fixed, target, gamma=gamma).backward()
    torch.testing.assert_close(leaf.grad, fixed.grad)


def test_gradcheck(make_batch):
    logits, target = make_batch(dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: adaptive_focal_loss(z, target),
                                    (logits.requires_grad_(),), fast_mode=True)


def test_common_behaviour(check_common):
    check_common(adaptive_focal_loss)


@pytest.mark.parametrize('name, value', [('gamma_hard', -1.0), ('gamma_easy', -0.5),
                                         ('threshold', 1.5), ('threshold', -0.1)])
def test_bad_options(make_batch, name, value):
    logits, target = make_batch()
    with pytest.raises(ValueError, match=f'{name}.*{value}'):
        adaptive_focal_loss(logits, target, **{name: value})
