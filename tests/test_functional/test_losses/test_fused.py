"""The fused log-softmax stages: gradients checked numerically (float64), chunking changes nothing."""
import pytest
import torch

from calibseg.functional import losses as L
from calibseg.functional.losses import fused


def _batch(n=2, c=5, m=11, seed=0, scale=4.0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, m, generator=gen, dtype=torch.float64) * scale
    target = torch.randint(0, c, (n, m), generator=gen)
    weight = torch.rand(n, m, generator=gen, dtype=torch.float64)
    return z, target, weight


def _combine(outputs):
    """A non-linear function of every output, so that each output's gradient is exercised with its own values."""
    log_p_y, mean, prob_sum = outputs
    total = log_p_y.sin().sum()
    if mean is not None:
        total = total + (mean * mean).sum()
    if prob_sum is not None:
        total = total + prob_sum.cos().sum()
    return total


def _naive(z, target, with_mean, weight):
    log_probs = torch.log_softmax(z, dim=1)
    log_p_y = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    mean = log_probs.mean(dim=1) if with_mean else None
    prob_sum = (log_probs.exp() * weight.unsqueeze(1)).sum(dim=(0, 2)) if weight is not None else None
    return log_p_y, mean, prob_sum


@pytest.fixture(params=[fused.CHUNK_ELEMENTS, 7], ids=['one-chunk', 'chunks-of-7'])
def chunk(request, monkeypatch):
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', request.param)
    return request.param


@pytest.mark.parametrize('with_mean', [False, True])
@pytest.mark.parametrize('weighted', [False, True])
def test_log_softmax_terms_match_autograd_and_gradcheck(chunk, with_mean, weighted):
    z, target, weight = _batch()
    weight = weight if weighted else None
    leaf = z.clone().requires_grad_()
    ours = fused.log_softmax_terms(leaf, target, with_mean=with_mean, prob_weight=weight)
    ref_leaf = z.clone().requires_grad_()
    ref = _naive(ref_leaf, target, with_mean, weight)
    for mine, theirs in zip(ours, ref):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, theirs)
    _combine(ours).backward()
    _combine(ref).backward()
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)

    def fn(x):
        return _combine(fused.log_softmax_terms(x, target, with_mean=with_mean, prob_weight=weight))

    assert torch.autograd.gradcheck(fn, (z.clone().requires_grad_(),))
    assert torch.autograd.gradgradcheck(fn, (z.clone().requires_grad_(),))


def test_single_output_used():
    # Unused outputs get no gradient (None), used ones alone drive the backward.
    z, target, _ = _batch()
    leaf = z.clone().requires_grad_()
    fused.log_softmax_terms(leaf, target, with_mean=True)[1].sum().backward()
    ref = z.clone().requires_grad_()
    torch.log_softmax(ref, 1).mean(1).sum().backward()
    torch.testing.assert_close(leaf.grad, ref.grad)


LOSSES = [
    (L.softmax_focal_loss, {}), (L.adaptive_focal_loss, {}), (L.label_smoothing_loss, dict(smoothing=0.1)),
    (L.mbls_loss, dict(margin=2.0, alpha=0.5)), (L.mdca_loss, {}),
    (L.acls_loss, dict(margin=3.0, alpha=1.0, pos_lambda=0.7, neg_lambda=0.3)),
]


@pytest.mark.parametrize('loss_fn, options', LOSSES, ids=lambda v: getattr(v, '__name__', ''))
def test_chunking_changes_nothing(monkeypatch, loss_fn, options):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 4, 6, generator=gen, dtype=torch.float64) * 6
    target = torch.randint(0, 5, (2, 4, 6), generator=gen)
    target[0, 0, :3] = 255
    weight = torch.rand(2, 4, 6, generator=gen, dtype=torch.float64)
    results = []
    for size in (fused.CHUNK_ELEMENTS, 13, 120):  # both images at once, runs of pixels, one image per chunk
        monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', size)
        leaf = logits.clone().requires_grad_()
        loss = loss_fn(leaf, target, weight=weight, **options)
        loss.backward()
        results.append((loss.detach(), leaf.grad))
    for other in results[1:]:
        torch.testing.assert_close(results[0], other, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('loss_fn, options', LOSSES, ids=lambda v: getattr(v, '__name__', ''))
def test_gradcheck_across_chunks(chunk, loss_fn, options):
    logits, target, _ = _batch(n=2, c=4, m=6, seed=5)
    logits = logits.view(2, 4, 2, 3)
    target = target.view(2, 2, 3).clone()
    target[1, 0, 0] = 255
    if loss_fn is L.acls_loss:  # R_neg uses a stop-gradient: only the rest is a true gradient
        options = dict(options, neg_lambda=0.0)
    if loss_fn is L.adaptive_focal_loss:  # gamma jumps at p_y = threshold: stay away from it
        options = dict(threshold=0.0)
    assert torch.autograd.gradcheck(lambda x: loss_fn(x, target, **options), (logits.clone().requires_grad_(),))


def test_class_sums_accumulate_in_float32_under_bf16_autocast():
    z, target, weight = _batch(m=40)
    z32, weight32 = z.float(), weight.float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _, _, prob_sum = fused.log_softmax_terms(z32, target, prob_weight=weight32)
    assert prob_sum.dtype == torch.float32
    torch.testing.assert_close(prob_sum, _naive(z32, target, False, weight32)[2])
