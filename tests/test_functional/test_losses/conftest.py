"""Fixtures shared by the tests of the pure-PyTorch losses."""
import numpy as np
import pytest
import torch

IGNORE = 255


def _make_batch(n=2, c=5, h=4, w=3, *, scale=3.0, ignore_frac=0.25, seed=0,
                dtype=torch.float32):
    """Random logits ``(n, c, h, w)`` and labels ``(n, h, w)`` with some pixels set to 255."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) * scale
    target = torch.randint(0, c, (n, h, w), generator=gen)
    target[torch.rand(n, h, w, generator=gen) < ignore_frac] = IGNORE
    target.view(-1)[0] = IGNORE  # at least one ignored pixel
    target.view(-1)[1] = 0  # and at least one valid one
    return logits.to(dtype), target


@pytest.fixture
def make_batch():
    return _make_batch


@pytest.fixture
def pixel_weight():
    """A positive per-pixel weight for the default batch shape."""
    gen = torch.Generator().manual_seed(1)
    return torch.rand(2, 4, 3, generator=gen, dtype=torch.float64) + 0.5


def _reduce(per_pixel, target, weight, reduction, ignore_index=IGNORE):
    """mmseg-style reduction of a float64 numpy map of per-pixel losses (nan at ignored pixels)."""
    valid = target.numpy() != ignore_index
    w = np.ones(target.shape) if weight is None else weight.double().expand(target.shape).numpy()
    values = np.where(valid, per_pixel * w, 0.0)
    if reduction == 'none':
        return values
    if reduction == 'sum':
        return values.sum()
    return values.sum() / max(valid.sum(), 1)


@pytest.fixture
def reduce_reference():
    return _reduce


@pytest.fixture
def check_common():
    """Checks every loss must pass: all-ignored batch, bad labels, bf16 autocast, shapes."""

    def check(loss_fn, **options):
        logits, target = _make_batch()

        # All pixels ignored: an exact, finite zero that is still connected to the logits.
        leaf = logits.clone().requires_grad_()
        loss = loss_fn(leaf, torch.full_like(target, IGNORE), **options)
        assert loss.item() == 0.0 and loss.grad_fn is not None
        loss.backward()
        assert torch.equal(leaf.grad, torch.zeros_like(leaf))

        # Labels outside [0, C) that are not ignore_index: ValueError listing them.
        bad = target.clone()
        bad.view(-1)[2], bad.view(-1)[3] = 7, -1
        with pytest.raises(ValueError, match=r'\[-1, 7\]'):
            loss_fn(logits, bad, **options)
        with pytest.raises(ValueError, match='does not match'):
            loss_fn(logits, target[:, :2], **options)
        with pytest.raises(TypeError, match='integer'):
            loss_fn(logits, target.float(), **options)
        with pytest.raises(ValueError, match='reduction'):
            loss_fn(logits, target, reduction='avg', **options)

        # bf16 under CPU autocast: float32 result, finite, equal to fp32 on the same rounded
        # logits, and close to fp32 on the unrounded ones; finite bf16 gradient.
        half = logits.to(torch.bfloat16).requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss_bf16 = loss_fn(half, target, **options)
        assert loss_bf16.dtype == torch.float32 and torch.isfinite(loss_bf16)
        loss_bf16.backward()
        assert half.grad.dtype == torch.bfloat16 and torch.isfinite(half.grad).all()
        rounded = loss_fn(half.detach().float(), target, **options)
        torch.testing.assert_close(loss_bf16, rounded, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(loss_bf16, loss_fn(logits, target, **options), rtol=2e-2,
                                   atol=1e-3)
        # Saturated bf16 logits stay finite.
        with torch.autocast('cpu', dtype=torch.bfloat16):
            big = loss_fn((logits * 100).to(torch.bfloat16), target, **options)
        assert torch.isfinite(big)

    return check
