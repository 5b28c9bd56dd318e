"""SC-BCE (pure function): expectation over draws, reproducibility, gradients, validation."""
import math

import numpy as np
import pytest
import torch

from calibseg.functional.losses.scbce import scbce_loss, scbce_targets, validate_scbce_args

IGNORE = 255


def _batch(n=4, h=5, w=6, *, seed=0, ignore_frac=0.2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, h, w, generator=gen, dtype=torch.float64) * 2.5
    target = torch.randint(0, 2, (n, h, w), generator=gen)
    target[torch.rand(n, h, w, generator=gen) < ignore_frac] = IGNORE
    if ignore_frac > 0:
        target.view(-1)[0] = IGNORE
    return logits.to(dtype), target


def _naive_bce(logits, target, y_tilde_per_image):
    """BCE with logits against per-image targets given as a function of y, mean over valid pixels (numpy)."""
    z = logits[:, 0].double().numpy()
    y = target.numpy()
    total, count = 0.0, 0
    for i in range(z.shape[0]):
        valid = y[i] != IGNORE
        t = y_tilde_per_image(i, y[i][valid].astype(float))
        zi = z[i][valid]
        total += float(np.sum(np.logaddexp(0.0, zi) - t * zi))
        count += int(valid.sum())
    return total / count


@pytest.mark.parametrize('beta, alpha', [(2.0, 0.2), (0.5, 0.6), (1.0, 0.5)])
def test_monte_carlo_average_matches_expected_label_smoothing(beta, alpha):
    """The mean over draws equals the expected=True loss, which is BCE with smoothing eps = 2 alpha beta."""
    logits, target = _batch()
    expected = scbce_loss(logits, target, alpha=alpha, beta=beta, expected=True)
    eps = 2 * alpha * beta
    smoothed = _naive_bce(logits, target, lambda i, y: (1 - eps) * y + eps / 2)
    assert expected.item() == pytest.approx(smoothed, rel=1e-12)

    gen = torch.Generator().manual_seed(123)
    draws = torch.stack([scbce_loss(logits, target, alpha=alpha, beta=beta, generator=gen)
                         for _ in range(2000)])
    std_err = draws.std().item() / math.sqrt(draws.numel())
    assert abs(draws.mean().item() - expected.item()) < 4.5 * std_err
    assert std_err > 0  # the draws do vary


def test_monte_carlo_with_per_image_alpha():
    logits, target = _batch(n=3)
    beta = 2.0
    alpha = torch.tensor([0.0, 0.1, 0.25])
    expected = scbce_loss(logits, target, alpha=alpha, beta=beta, expected=True)
    smoothed = _naive_bce(logits, target,
                          lambda i, y: (1 - 2 * alpha[i].item() * beta) * y + alpha[i].item() * beta)
    assert expected.item() == pytest.approx(smoothed, rel=1e-12)
    gen = torch.Generator().manual_seed(7)
    draws = torch.stack([scbce_loss(logits, target, alpha=alpha, beta=beta, generator=gen) for _ in range(2000)])
    std_err = draws.std().item() / math.sqrt(draws.numel())
    assert abs(draws.mean().item() - expected.item()) < 4.5 * std_err


def test_each_draw_perturbs_whole_images():
    """Per image the loss map is either plain BCE or BCE against (1-2b)y+b, never a mix."""
    logits, target = _batch(n=6, ignore_frac=0.0)
    beta = 2.0
    plain = scbce_loss(logits, target, alpha=0.0, beta=beta, generator=torch.Generator(), reduction='none')
    flipped_target = (1 - 2 * beta) * target.double() + beta
    z = logits[:, 0]
    flipped = torch.nn.functional.softplus(z) - flipped_target * z
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):
        draw = scbce_loss(logits, target, alpha=0.25, beta=beta, generator=gen, reduction='none')
        for i in range(6):
            is_plain = torch.allclose(draw[i], plain[i])
            assert is_plain or torch.allclose(draw[i], flipped[i])
            seen.add(is_plain)
    assert seen == {True, False}


def test_reference_default_beta_gives_targets_minus_one_and_two():
    """beta=2 (code default): a perturbed image's targets are -1 (foreground) and 2 (background)."""
    y = torch.tensor([[1, 0, 1]]).repeat(64, 1)
    gen = torch.Generator().manual_seed(0)
    targets = scbce_targets(y, torch.full((64,), 0.25, dtype=torch.float64), beta=2.0, generator=gen)
    perturbed = (targets != y.double()).any(dim=1)
    assert 0 < int(perturbed.sum()) < 64
    assert torch.equal(targets[perturbed], torch.tensor([-1.0, 2.0, -1.0], dtype=torch.float64).expand(
        int(perturbed.sum()), 3))
    # its expectation stays in [0, 1]: smoothing eps = 2 * 0.25 * 2 = 1, i.e. the uniform target 0.5
    expected = scbce_targets(y, torch.full((64,), 0.25, dtype=torch.float64), beta=2.0, expected=True)
    assert torch.allclose(expected, torch.full_like(expected, 0.5))


def test_fixed_seed_is_reproducible_and_seeds_differ():
    logits, target = _batch()

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return torch.stack([scbce_loss(logits, target, alpha=0.2, generator=gen) for _ in range(30)])

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    # the global RNG is neither used nor advanced
    state = torch.get_rng_state()
    run(5)
    assert torch.equal(state, torch.get_rng_state())


def test_ignored_pixels_and_weights():
    logits, target = _batch()
    gen_state = torch.Generator().manual_seed(9).get_state()

    def loss(lg, tg, **kw):
        gen = torch.Generator()
        gen.set_state(gen_state)
        return scbce_loss(lg, tg, alpha=0.2, generator=gen, **kw)

    changed = logits.clone()
    changed[:, 0][target == IGNORE] = 1e6  # ignored pixels never matter
    assert torch.equal(loss(logits, target), loss(changed, target))
    all_ignored = torch.full_like(target, IGNORE)
    leaf = logits.clone().requires_grad_()
    zero = loss(leaf, all_ignored)
    zero.backward()
    assert zero.item() == 0.0 and torch.equal(leaf.grad, torch.zeros_like(leaf))
    weight = torch.rand(target.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    per_pixel = loss(logits, target, reduction='none')
    valid = target != IGNORE
    assert per_pixel[~valid].abs().sum() == 0
    weighted = loss(logits, target, weight=weight)
    assert weighted.item() == pytest.approx((per_pixel * weight).sum().item() / valid.sum().item(), rel=1e-12)
    assert loss(logits, target, reduction='sum').item() == pytest.approx(per_pixel.sum().item(), rel=1e-12)


def test_gradcheck_float64():
    logits, target = _batch(n=2, h=3, w=3)
    leaf = logits.clone().requires_grad_()
    alpha = torch.tensor([0.05, 0.2], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda z: scbce_loss(z, target, alpha=alpha, beta=2.0, expected=True), (leaf,))

    def one_draw(z):  # re-seeded on every call, so gradcheck sees one fixed draw
        return scbce_loss(z, target, alpha=0.25, beta=2.0, generator=torch.Generator().manual_seed(1))

    assert torch.autograd.gradcheck(one_draw, (leaf,))
    assert torch.autograd.gradgradcheck(lambda z: scbce_loss(z, target, alpha=0.1, expected=True), (leaf,))


def test_half_precision_is_computed_in_float32():
    logits, target = _batch(dtype=torch.bfloat16)
    loss = scbce_loss(logits, target, alpha=0.1, expected=True)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize('kwargs, match', [
    (dict(beta=0.0, alpha=0.1), 'beta'),
    (dict(beta=-1.0, alpha=0.1), 'beta'),
    (dict(beta=float('nan'), alpha=0.1), 'beta'),
    (dict(beta=2.0, alpha=0.3), r'alpha must lie in \[0, 1/\(2\*beta\)\] = \[0, 0.25\]'),
    (dict(beta=2.0, alpha=-0.01), 'alpha'),
    (dict(beta=0.5, alpha=1.5), 'alpha'),
])
def test_bad_options_raise(kwargs, match):
    logits, target = _batch()
    with pytest.raises(ValueError, match=match):
        scbce_loss(logits, target, expected=True, **kwargs)
    with pytest.raises(ValueError, match=match):
        validate_scbce_args(**kwargs)


def test_bad_inputs_raise():
    logits, target = _batch()
    gen = torch.Generator()
    with pytest.raises(ValueError, match=r'one-channel heads.*C=2'):
        scbce_loss(logits.repeat(1, 2, 1, 1), target, alpha=0.1, generator=gen)
    bad = target.clone()
    bad.view(-1)[1] = 2
    with pytest.raises(ValueError, match=r'target contain values \[2\] outside \[0, 2\) .*0 \(background\), '
                                         r'1 \(foreground\)'):
        scbce_loss(logits, bad, alpha=0.1, generator=gen)
    with pytest.raises(ValueError, match=r'\[255\]'):  # 255 labels with another ignore_index
        scbce_loss(logits, target, alpha=0.1, generator=gen, ignore_index=-1)
    with pytest.raises(ValueError, match=r'shape \(N,\) = \(4,\)'):
        scbce_loss(logits, target, alpha=torch.full((3,), 0.1), generator=gen)
    with pytest.raises(ValueError, match=r'alpha must lie.*images \[2\]'):
        scbce_loss(logits, target, alpha=torch.tensor([0.1, 0.1, 0.4, 0.0]), generator=gen)
    with pytest.raises(ValueError, match='generator'):
        scbce_loss(logits, target, alpha=0.1)
    with pytest.raises(ValueError, match='does not match'):
        scbce_loss(logits, target[:, :2], alpha=0.1, generator=gen)
    with pytest.raises(TypeError, match='integer'):
        scbce_loss(logits, target.double(), alpha=0.1, generator=gen)
    with pytest.raises(ValueError, match='reduction'):
        scbce_loss(logits, target, alpha=0.1, generator=gen, reduction='avg')


# ----------------------------------------------------------------------------------------------- soft targets
def _soft(target, *, seed=5, dtype=torch.float64):
    """Soft targets in [0, 1] (some exactly 0 and 1), with 255 at ignored pixels (e.g. padding) that must not count."""
    gen = torch.Generator().manual_seed(seed)
    soft = torch.rand(target.shape, generator=gen, dtype=torch.float64)
    soft[soft < 0.1] = 0.0
    soft[soft > 0.9] = 1.0
    return soft.masked_fill(target == IGNORE, 255.0).to(dtype)


def _naive_soft_bce(logits, target, soft, y_tilde_per_image):
    """Mean over valid pixels of -[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))], t = y_tilde(s), pixel by pixel."""
    z = logits[:, 0].double().numpy()
    labels, s = target.numpy(), soft.double().numpy()
    total, count = 0.0, 0
    for i in range(z.shape[0]):
        for zn, yn, sn in zip(z[i].ravel(), labels[i].ravel(), s[i].ravel()):
            if yn == IGNORE:
                continue
            t = y_tilde_per_image(i, sn)
            p = 1.0 / (1.0 + math.exp(-zn))
            total += -(t * math.log(p) + (1.0 - t) * math.log1p(-p))
            count += 1
    return total / count


def test_soft_targets_match_a_naive_formula():
    logits, target = _batch(n=3)
    soft = _soft(target)
    plain = scbce_loss(logits, target, alpha=0.0, expected=True, soft_target=soft)
    assert plain.item() == pytest.approx(_naive_soft_bce(logits, target, soft, lambda i, s: s), rel=1e-12)
    alpha, beta = torch.tensor([0.0, 0.1, 0.25]), 2.0
    smooth = scbce_loss(logits, target, alpha=alpha, beta=beta, expected=True, soft_target=soft)
    naive = _naive_soft_bce(logits, target, soft, lambda i, s: (1 - 2 * alpha[i].item() * beta) * s
                            + alpha[i].item() * beta)
    assert smooth.item() == pytest.approx(naive, rel=1e-12)
    # one draw: the images the generator perturbs get (1 - 2 beta) s + beta (the draws are one uniform per image)
    perturbed = torch.rand(3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) < alpha.double()
    draw = scbce_loss(logits, target, alpha=alpha, beta=beta, generator=torch.Generator().manual_seed(4),
                      soft_target=soft)
    naive = _naive_soft_bce(logits, target, soft, lambda i, s: (1 - 2 * beta) * s + beta if perturbed[i] else s)
    assert draw.item() == pytest.approx(naive, rel=1e-12)
    assert perturbed.tolist() != [False] * 3  # the draw does perturb an image


def test_soft_targets_of_zeros_and_ones_are_the_labels():
    logits, target = _batch()
    as_soft = target.double().masked_fill(target == IGNORE, 0.5)
    weight = torch.rand(target.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for reduction in ('mean', 'sum', 'none'):
        hard = scbce_loss(logits, target, alpha=0.2, expected=True, weight=weight, reduction=reduction)
        soft = scbce_loss(logits, target, alpha=0.2, expected=True, weight=weight, reduction=reduction,
                          soft_target=as_soft)
        torch.testing.assert_close(soft, hard, rtol=0, atol=0)


def test_soft_target_gradcheck_float64():
    logits, target = _batch(n=2, h=3, w=3)
    soft = _soft(target)
    leaf = logits.clone().requires_grad_()
    alpha = torch.tensor([0.05, 0.2], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda z: scbce_loss(z, target, alpha=alpha, beta=2.0, expected=True, soft_target=soft), (leaf,))
    assert torch.autograd.gradcheck(
        lambda z: scbce_loss(z, target, alpha=0.25, beta=2.0, generator=torch.Generator().manual_seed(1),
                             soft_target=soft, reduction='none').sum(), (leaf,))
    # the gradient is sigmoid(z) - s / P at valid pixels and none flows into the soft target
    soft_leaf = soft.clone().requires_grad_()
    loss = scbce_loss(leaf, target, alpha=0.0, expected=True, soft_target=soft_leaf)
    loss.backward()
    valid = target != IGNORE
    expected = torch.where(valid, (logits[:, 0].sigmoid() - soft) / valid.sum(), torch.zeros(()))
    torch.testing.assert_close(leaf.grad[:, 0], expected, rtol=1e-12, atol=1e-15)
    assert soft_leaf.grad is None


def test_bad_soft_targets_raise():
    logits, target = _batch()
    soft = _soft(target)
    with pytest.raises(TypeError, match='soft_target must be a floating-point tensor'):
        scbce_loss(logits, target, alpha=0.1, expected=True, soft_target=(soft * 255).long())
    with pytest.raises(ValueError, match=r'soft_target of shape \(4, 5, 5\)'):
        scbce_loss(logits, target, alpha=0.1, expected=True, soft_target=soft[..., :5])
    for bad_value in (1.5, -0.01, float('nan')):
        bad = soft.clone()
        bad[target != IGNORE] = bad[target != IGNORE].index_fill(0, torch.tensor([3]), bad_value)
        with pytest.raises(ValueError, match=r'soft_target must lie in \[0, 1\] at non-ignored pixels; 1 value'):
            scbce_loss(logits, target, alpha=0.1, expected=True, soft_target=bad)


def test_soft_target_check_on_the_device_path_is_an_assertion(monkeypatch):
    """On accelerators the range check is a device assertion (on CPU it fires at once, as a RuntimeError)."""
    from calibseg.functional.losses import utils as loss_utils

    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', True)
    logits, target = _batch()
    soft = _soft(target)
    reference = scbce_loss(logits, target, alpha=0.1, expected=True, soft_target=soft)
    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', False)
    torch.testing.assert_close(reference, scbce_loss(logits, target, alpha=0.1, expected=True, soft_target=soft))
    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', True)
    with pytest.raises(RuntimeError, match=r'soft_target holds values outside \[0, 1\]'):
        scbce_loss(logits, target, alpha=0.1, expected=True, soft_target=soft.masked_fill(target != IGNORE, 1.5))
