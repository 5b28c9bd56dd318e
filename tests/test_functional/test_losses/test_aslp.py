"""ASLP's per-image statistics and alpha update (pure functions) against naive references and hand values."""
import math

import numpy as np
import pytest
import torch

from calibseg.functional.losses.aslp import (
    aslp_alpha_max,
    aslp_alpha_update,
    aslp_image_statistics,
    validate_aslp_args,
)

IGNORE = 255


def _naive_stats(logits, target, eps):
    """The reference code's form: p = sigmoid(z) clamped to [eps, 1 - eps], means over non-ignored pixels."""
    bce, cal = [], []
    for z, y in zip(logits[:, 0].double().numpy(), target.numpy()):
        valid = y != IGNORE
        p = 1.0 / (1.0 + np.exp(-z[valid]))
        if eps > 0:
            p = np.clip(p, eps, 1 - eps)
        t = y[valid].astype(float)
        bce.append(float(np.mean(-t * np.log(p) - (1 - t) * np.log(1 - p))))
        cal.append(float(np.mean(-np.log(p * (1 - p)))))
    return np.array(bce), np.array(cal)


def test_statistics_match_the_reference_form_with_ignored_pixels():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 5, 6, generator=gen) * 4
    target = torch.randint(0, 2, (3, 5, 6), generator=gen)
    target[torch.rand(3, 5, 6, generator=gen) < 0.3] = IGNORE
    stats = aslp_image_statistics(logits, target, ignore_index=IGNORE, prob_clamp=1e-7)
    bce, cal = _naive_stats(logits, target, 1e-7)
    np.testing.assert_allclose(stats.bce.numpy(), bce, rtol=1e-9)
    np.testing.assert_allclose(stats.cal.numpy(), cal, rtol=1e-9)
    assert stats.num_pixels.tolist() == [int((t != IGNORE).sum()) for t in target]
    assert stats.bce.dtype == torch.float64


def test_clamp_bounds_saturated_logits_like_the_reference():
    logits = torch.tensor([40.0, -40.0, 0.0]).reshape(1, 1, 1, 3)
    target = torch.tensor([[[1, 1, 0]]])
    clamped = aslp_image_statistics(logits, target, prob_clamp=1e-7)
    bce, cal = _naive_stats(logits, target, 1e-7)
    assert clamped.bce.item() == pytest.approx(bce[0], rel=1e-9)
    assert clamped.cal.item() == pytest.approx(cal[0], rel=1e-9)
    exact = aslp_image_statistics(logits, target, prob_clamp=0.0)
    # without the clamp: CAL of z = +-40 is softplus(40) + softplus(-40) ~ 40 (finite, from the logits)
    tail = math.log1p(math.exp(-40))  # softplus(-40); softplus(40) = 40 + tail
    assert exact.cal.item() == pytest.approx((2 * (40 + 2 * tail) + 2 * math.log(2)) / 3, rel=1e-12)
    assert exact.bce.item() == pytest.approx((tail + 40 + tail + math.log(2)) / 3, rel=1e-12)


def test_image_without_labelled_pixels_has_zero_count():
    logits = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[[IGNORE, IGNORE], [IGNORE, IGNORE]], [[0, 1], [1, IGNORE]]])
    stats = aslp_image_statistics(logits, target)
    assert stats.num_pixels.tolist() == [0, 3]
    assert stats.bce[0].item() == 0.0 and stats.bce[1].item() == pytest.approx(math.log(2))


def test_update_matches_a_hand_computation():
    # beta 2, eta 0.002, lambda 2000, acc_val 0.9: 1 - acc = 0.1
    alpha = torch.tensor([0.01, 0.06, 0.03, 0.239], dtype=torch.float64)
    bce = torch.tensor([0.25, 0.5, 0.5, 0.0], dtype=torch.float64)
    cal = torch.tensor([2.25, 1.0, 3.0, 6.0], dtype=torch.float64)
    new = aslp_alpha_update(alpha, bce, cal, acc_val=0.9, beta=2.0, eta=0.002, lam=2000.0, alpha_max=0.24)
    expected = [
        0.01 + 0.002 * (2.25 - 0.5) / 2,  # beta*alpha = 0.02 <= 0.1: entropy term only -> 0.01175
        0.0,  # beta*alpha = 0.12: 0.06 + 0.002 * (0 + 2000 * (0.1 - 0.12)) = -0.02 -> clipped to 0
        0.03 + 0.002 * (3.0 - 1.0) / 2,  # 0.032
        0.0,  # 0.239 + 0.002 * (3 + 2000 * (0.1 - 0.478)) = -1.267 -> clipped to 0
    ]
    np.testing.assert_allclose(new.numpy(), expected, rtol=0, atol=1e-15)
    # the upper clip: no accuracy constraint (acc_val 0) and a positive entropy term
    top = aslp_alpha_update(torch.tensor([0.239], dtype=torch.float64), torch.tensor([0.0]), torch.tensor([6.0]),
                            acc_val=0.0, beta=2.0, eta=0.002, lam=2000.0, alpha_max=0.24)
    assert top.item() == 0.24  # 0.239 + 0.006 clipped to 1/(2 beta) - 0.01


def test_alpha_max_and_argument_checks():
    assert aslp_alpha_max(2.0) == pytest.approx(0.24)
    assert aslp_alpha_max(0.5, 0.1) == pytest.approx(0.9)
    with pytest.raises(ValueError, match='alpha_margin'):
        aslp_alpha_max(50.0, 0.01)
    with pytest.raises(ValueError, match='beta'):
        aslp_alpha_max(0.0)
    with pytest.raises(ValueError, match='eta'):
        validate_aslp_args(beta=2.0, eta=-1.0, lam=1.0, alpha_margin=0.01, prob_clamp=1e-7)
    with pytest.raises(ValueError, match='prob_clamp'):
        validate_aslp_args(beta=2.0, eta=1.0, lam=1.0, alpha_margin=0.01, prob_clamp=0.5)
    with pytest.raises(ValueError, match='acc_val'):
        aslp_alpha_update(torch.zeros(1), torch.zeros(1), torch.zeros(1), acc_val=1.5)
    with pytest.raises(ValueError, match='one-channel'):
        aslp_image_statistics(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match='0, 1 or ignore_index'):
        aslp_image_statistics(torch.zeros(1, 1, 1, 2), torch.tensor([[[0, 7]]]))


def test_statistics_with_soft_targets_take_bce_against_them():
    """The reference computes BCE_i against the (soft) masks it trains on: -s log p - (1 - s) log(1 - p)."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 1, 5, 6, generator=gen) * 4
    target = torch.randint(0, 2, (3, 5, 6), generator=gen)
    target[torch.rand(3, 5, 6, generator=gen) < 0.3] = IGNORE
    soft = torch.rand(3, 5, 6, generator=gen).masked_fill(target == IGNORE, 255.0)
    stats = aslp_image_statistics(logits, target, ignore_index=IGNORE, prob_clamp=1e-7, soft_target=soft)
    bce, cal = [], []
    for z, y, s in zip(logits[:, 0].double().numpy(), target.numpy(), soft.double().numpy()):
        valid = y != IGNORE
        p = np.clip(1.0 / (1.0 + np.exp(-z[valid])), 1e-7, 1 - 1e-7)
        bce.append(np.mean(-s[valid] * np.log(p) - (1 - s[valid]) * np.log(1 - p)))
        cal.append(np.mean(-np.log(p * (1 - p))))
    np.testing.assert_allclose(stats.bce.numpy(), bce, rtol=1e-9)
    np.testing.assert_allclose(stats.cal.numpy(), cal, rtol=1e-9)
    hard = aslp_image_statistics(logits, target, ignore_index=IGNORE, prob_clamp=1e-7)
    as_soft = aslp_image_statistics(logits, target, ignore_index=IGNORE, prob_clamp=1e-7,
                                    soft_target=target.float().masked_fill(target == IGNORE, 0.3))
    torch.testing.assert_close(as_soft.bce, hard.bce, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r'soft_target must lie in \[0, 1\]'):
        aslp_image_statistics(logits, target, soft_target=soft.masked_fill(target != IGNORE, 2.0))
