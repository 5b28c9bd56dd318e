
import numpy as np
import pytest
import torch
from loss_reference import logsumexp, per_pixel_reference

from calibseg.functional.losses import acls_loss

IGNORE = 255


def reference_acls(logits, target, pos_lambda=1.0, neg_lambda=0.1, alpha=0.1, margin=10.0,
                   class_weight=None):
    """Per-pixel CE + alpha (pos_lambda r_pos + neg_lambda r_neg), code form, by explicit loops."""
    num_classes = logits.shape[1]

    def pixel(row, y, _):
        ce = (logsumexp(row) - row[y]) * (1.0 if class_weight is None else class_weight[y])
        top = max(row)
        r_pos = sum(max(0.0, top - margin) ** 2 for k in range(num_classes) if row[k] == top)
        r_neg = sum(max(0.0, top - row[k] - margin) ** 2
                    for k in range(num_classes) if row[k] != top) / (num_classes - 1)
        return ce + alpha * (pos_lambda * r_pos + neg_lambda * r_neg)
    return per_pixel_reference(logits, target, pixel)


def torch_reference(logits, target, pos_lambda, neg_lambda, alpha, margin):
    """The reference code's structure with autograd, over the flattened non-ignored pixels."""
    rows = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    labels = target.reshape(-1)
    keep = labels != IGNORE
    rows, labels = rows[keep], labels[keep]
    num, num_classes = rows.shape
    top = rows.max(dim=1).values.unsqueeze(1).repeat(1, num_classes)
    indicator = (top.detach() == rows.detach()).to(rows.dtype)
    pos = indicator * torch.relu(top - margin) ** 2
    neg = (1 - indicator) * torch.relu(top.detach() - rows - margin) ** 2
    reg = pos_lambda * pos.sum() / num + neg_lambda * neg.sum() / (num * (num_classes - 1))
    return torch.nn.functional.cross_entropy(rows, labels) + alpha * reg


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('options', [{}, dict(margin=2.0, pos_lambda=0.5, neg_lambda=2.0, alpha=1.0),
                                     dict(margin=0.0)])
@pytest.mark.parametrize('weighted', [False, True])
def test_matches_reference(make_batch, pixel_weight, reduce_reference, reduction, options,
                           weighted):
    logits, target = make_batch(scale=6.0)
    class_weight = [0.5, 1.0, 2.0, 1.5, 0.0] if weighted else None
    weight = pixel_weight if weighted else None
    loss = acls_loss(logits, target, weight=weight, class_weight=class_weight,
                     reduction=reduction, **options)
    expected = reduce_reference(reference_acls(logits, target, class_weight=class_weight,
                                               **options), target, weight, reduction)
    np.testing.assert_allclose(loss.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_positive_term_is_active_with_large_logits(make_batch):
    logits, target = make_batch(scale=15.0)
    assert (logits.amax(dim=1) > 10).any()
    np.testing.assert_allclose(acls_loss(logits, target).item(),
                               np.nanmean(reference_acls(logits, target)), rtol=1e-5)


def test_tied_maxima_each_count():
    logits = torch.tensor([[[[12.0]], [[12.0]], [[0.0]], [[1.0]]]], dtype=torch.float64,
                          requires_grad=True)
    target = torch.full((1, 1, 1), 2)  # not a tied class, so the CE gradient is symmetric too
    loss = acls_loss(logits, target, alpha=1.0, neg_lambda=0.0)
    ce = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(loss, ce + 2 * (12.0 - 10.0) ** 2)
    loss.backward()
    ref = logits.detach().clone().requires_grad_()
    torch_reference(ref, target, 1.0, 0.0, 1.0, 10.0).backward()
    # The summed gradient over the tied entries equals the reference code's (which sends it all
    # to one of them); here it is split evenly.
    torch.testing.assert_close(logits.grad[0, :2].sum(), ref.grad[0, :2].sum())
    torch.testing.assert_close(logits.grad[0, 0], logits.grad[0, 1])


@pytest.mark.parametrize('scale', [4.0, 15.0])
def test_gradients(make_batch, scale):
    logits, target = make_batch(scale=scale, dtype=torch.float64)
    options = dict(pos_lambda=0.7, neg_lambda=0.3, alpha=1.0, margin=3.0)
    ours = logits.clone().requires_grad_()
    acls_loss(ours, target, **options).backward()
    ref = logits.clone().requires_grad_()
    torch_reference(ref, target, **options).backward()
    torch.testing.assert_close(ours.grad, ref.grad)
    # R_neg uses a stop-gradient, so only the rest is a true gradient: check that numerically.
    pos_only = dict(options, neg_lambda=0.0)
    assert torch.autograd.gradcheck(lambda z: acls_loss(z, target, **pos_only),
                                    (logits.clone().requires_grad_(),), fast_mode=True)


def test_common_behaviour(check_common):
    check_common(acls_loss)
    check_common(acls_loss, margin=1.0, alpha=1.0)


@pytest.mark.parametrize('name', ['pos_lambda', 'neg_lambda', 'alpha', 'margin'])
def test_bad_options(make_batch, name):
    logits, target = make_batch()
    with pytest.raises(ValueError, match=f'{name} must be a finite number >= 0, got -0.5'):
        acls_loss(logits, target, **{name: -0.5})
