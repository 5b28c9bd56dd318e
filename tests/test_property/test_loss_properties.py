"""Properties of the calibration losses on random inputs (hypothesis).

Random pixel counts, class counts, ignore masks, logit scales (up to 1e4: saturated float32 softmax) and input
dtypes (float32, bfloat16). Invariants: values and gradients are finite, the order of the pixels does not
matter, ignored pixels (whatever they hold) change neither the value nor the other pixels' gradients and get a
zero gradient, and the per-pixel losses are additive over a split of the batch (``reduction='sum'``).
"""
import torch
from hypothesis import given
from hypothesis import strategies as st

from calibseg.functional.losses import (
    acls_loss,
    adaptive_focal_loss,
    label_smoothing_loss,
    mbls_loss,
    mdca_loss,
    sece_loss,
    softmax_focal_loss,
)

IGNORE = 255
PER_PIXEL = {'focal': softmax_focal_loss, 'adaptive_focal': adaptive_focal_loss, 'ls': label_smoothing_loss,
             'mbls': mbls_loss, 'acls': acls_loss}
BATCH_LEVEL = {'mdca': mdca_loss, 'sece': sece_loss}
ALL = {**PER_PIXEL, **BATCH_LEVEL}
SCALES = (0.1, 1.0, 8.0, 60.0, 1e4)
DTYPES = (torch.float32, torch.bfloat16)


@st.composite
def loss_cases(draw):
    """``(logits (1, C, P), labels (1, P))`` with at least one labelled pixel."""
    p = draw(st.integers(1, 40))
    c = draw(st.integers(2, 6))
    scale = draw(st.sampled_from(SCALES))
    dtype = draw(st.sampled_from(DTYPES))
    ignored = draw(st.floats(0.0, 0.6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = (torch.randn(1, c, p, generator=gen) * scale).to(dtype)
    labels = torch.randint(0, c, (1, p), generator=gen)
    drop = torch.rand(1, p, generator=gen) < ignored
    drop[0, 0] = False
    labels[drop] = IGNORE
    return logits, labels


def _value_and_grad(fn, logits, labels, **options):
    x = logits.detach().clone().requires_grad_()
    value = fn(x, labels, ignore_index=IGNORE, **options)
    value.backward()
    return value.detach().float(), x.grad.float()


def _tol(dtype):
    return dict(rtol=2e-2, atol=1e-3) if dtype == torch.bfloat16 else dict(rtol=1e-5, atol=1e-6)


@given(case=loss_cases(), name=st.sampled_from(sorted(ALL)))
def test_values_and_gradients_are_finite(case, name):
    logits, labels = case
    value, grad = _value_and_grad(ALL[name], logits, labels)
    assert torch.isfinite(value) and value >= -1e-6, (name, value)
    assert torch.isfinite(grad).all(), name


@given(case=loss_cases(), name=st.sampled_from(sorted(ALL)), seed=st.integers(0, 1000))
def test_pixel_order_does_not_matter(case, name, seed):
    logits, labels = case
    perm = torch.randperm(labels.shape[1], generator=torch.Generator().manual_seed(seed))
    value, grad = _value_and_grad(ALL[name], logits, labels)
    value_p, grad_p = _value_and_grad(ALL[name], logits[..., perm], labels[..., perm])
    torch.testing.assert_close(value_p, value, **_tol(logits.dtype))
    torch.testing.assert_close(grad_p, grad[..., perm], **_tol(logits.dtype))


@given(case=loss_cases(), name=st.sampled_from(sorted(ALL)), junk=st.sampled_from([1e4, -1e4, 0.0, 3.0]))
def test_ignored_pixels_have_no_effect(case, name, junk):
    logits, labels = case
    ignored = (labels == IGNORE).unsqueeze(1).expand_as(logits)
    dirty = torch.where(ignored, torch.full_like(logits, junk), logits)
    value, grad = _value_and_grad(ALL[name], logits, labels)
    value_d, grad_d = _value_and_grad(ALL[name], dirty, labels)
    assert torch.equal(value_d, value), name
    assert torch.equal(grad_d, grad), name
    assert not grad[ignored].any(), name


@given(case=loss_cases(), name=st.sampled_from(sorted(PER_PIXEL)), cut=st.floats(0.0, 1.0))
def test_per_pixel_losses_are_additive_over_a_batch_split(case, name, cut):
    logits, labels = case
    s = int(round(cut * labels.shape[1]))
    fn = PER_PIXEL[name]
    whole = fn(logits, labels, ignore_index=IGNORE, reduction='sum').float()
    parts = sum(fn(logits[..., sl], labels[..., sl], ignore_index=IGNORE, reduction='sum').float()
                for sl in (slice(0, s), slice(s, None)) if labels[..., sl].numel())
    torch.testing.assert_close(parts, whole, **_tol(logits.dtype))
    # the mean is the sum over the labelled pixels
    mean = fn(logits, labels, ignore_index=IGNORE).float()
    torch.testing.assert_close(mean * int((labels != IGNORE).sum()), whole, **_tol(logits.dtype))
