
import numpy as np
import pytest
import torch
from loss_reference import logsumexp, per_pixel_reference

from calibseg.functional.losses import mbls_loss

IGNORE = 255


def reference_mbls(logits, target, margin, alpha, class_weight=None):
    """Per-pixel CE + alpha * mean_k ReLU(max_j z_j - z_k - m), by explicit loops."""
    num_classes = logits.shape[1]

    def pixel(row, y, _):
        ce = (logsumexp(row) - row[y]) * (1.0 if class_weight is None else class_weight[y])
        penalty = sum(max(0.0, max(row) - row[k] - margin) for k in range(num_classes)) / num_classes
        return ce + alpha * penalty
    return per_pixel_reference(logits, target, pixel)


def torch_reference(logits, target, margin, alpha):
    """Plain autograd over the flattened non-ignored pixels (max not detached)."""
    rows = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    labels = target.reshape(-1)
    keep = labels != IGNORE
    rows, labels = rows[keep], labels[keep]
    ce = torch.nn.functional.cross_entropy(rows, labels)
    top = rows.max(dim=1, keepdim=True).values
    return ce + alpha * torch.relu(top - rows - margin).mean()


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('margin, alpha', [(10.0, 0.1), (2.0, 0.5), (0.0, 1.0)])
@pytest.mark.parametrize('weighted', [False, True])
def test_matches_reference(make_batch, pixel_weight, reduce_reference, reduction, margin, alpha,
                           weighted):
    logits, target = make_batch(scale=6.0)
    class_weight = [0.5, 1.0, 2.0, 1.5, 0.0] if weighted else None
    weight = pixel_weight if weighted else None
    loss = mbls_loss(logits, target, margin=margin, alpha=alpha, weight=weight,
                     class_weight=class_weight, reduction=reduction)
    expected = reduce_reference(reference_mbls(logits, target, margin, alpha, class_weight),
                                target, weight, reduction)
    np.testing.assert_allclose(loss.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_defaults(make_batch):
    logits, target = make_batch(scale=8.0)
    np.testing.assert_allclose(mbls_loss(logits, target).item(),
                               np.nanmean(reference_mbls(logits, target, 10.0, 0.1)), rtol=1e-5)


def test_gradients(make_batch):
    logits, target = make_batch(scale=4.0, dtype=torch.float64)
    ours = logits.clone().requires_grad_()
    mbls_loss(ours, target, margin=2.0, alpha=0.5).backward()
    ref = logits.clone().requires_grad_()
    torch_reference(ref, target, 2.0, 0.5).backward()
    torch.testing.assert_close(ours.grad, ref.grad)
    leaf = logits.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: mbls_loss(z, target, margin=2.0, alpha=0.5),
                                    (leaf,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda z: mbls_loss(z, target, margin=2.0, alpha=0.5),
                                        (leaf,), fast_mode=True)


def test_tied_maxima_split_the_gradient():
    # Two maximal logits: the penalty's max-gradient is split between them, as torch.amax does.
    logits = torch.tensor([[[[5.0]], [[5.0]], [[0.0]], [[1.0]]]], dtype=torch.float64,
                          requires_grad=True)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    mbls_loss(logits, target, margin=3.0, alpha=1.0).backward()
    ref = logits.detach().clone().requires_grad_()
    top = ref.amax(dim=1, keepdim=True)
    (torch.nn.functional.cross_entropy(ref, target) + torch.relu(top - ref - 3.0).mean()).backward()
    torch.testing.assert_close(logits.grad, ref.grad)


def test_common_behaviour(check_common):
    check_common(mbls_loss)
    check_common(mbls_loss, margin=1.0, alpha=1.0)


@pytest.mark.parametrize('name, value', [('margin', -1.0), ('alpha', -0.1), ('margin', 'ten'),
                                         ('alpha', float('inf'))])
def test_bad_options(make_batch, name, value):
    logits, target = make_batch()
    with pytest.raises(ValueError, match=name):
        mbls_loss(logits, target, **{name: value})
