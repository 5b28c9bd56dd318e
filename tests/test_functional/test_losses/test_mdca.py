import math

import numpy as np
import pytest
import torch

from calibseg.functional.losses import mdca_loss

IGNORE = 255


def reference_mdca(logits, target, beta, *, weight=None, class_weight=None, reduction='mean'):
    """CE (reduced mmseg-style) + beta * (1/C) sum_k |mean p_k - mean 1[y = k]|, by loops."""
    z = logits.detach().double().numpy()
    num_classes = z.shape[1]
    w = None if weight is None else weight.double().expand(target.shape).numpy()
    ce_sum, count = 0.0, 0
    prob_sum, label_sum, total = np.zeros(num_classes), np.zeros(num_classes), 0.0
    for n, h, wi in np.ndindex(*target.shape):
        y = int(target[n, h, wi])
        if y == IGNORE:
            continue
        row = z[n, :, h, wi]
        exps = [math.exp(v) for v in row]
        lse = math.log(sum(exps))
        pixel_weight = 1.0 if w is None else w[n, h, wi]
        ce = (lse - row[y]) * (1.0 if class_weight is None else class_weight[y])
        ce_sum += pixel_weight * ce
        count += 1
        for k in range(num_classes):
            prob_sum[k] += pixel_weight * exps[k] / sum(exps)
        label_sum[y] += pixel_weight
        total += pixel_weight
    ce = ce_sum if reduction == 'sum' else ce_sum / count
    mdca = np.abs(prob_sum / total - label_sum / total).mean()
    return ce + beta * mdca


def torch_reference(logits, target, beta):
    rows = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    labels = target.reshape(-1)
    keep = labels != IGNORE
    rows, labels = rows[keep], labels[keep]
    probs = rows.softmax(dim=1)
    onehot = torch.nn.functional.one_hot(labels, rows.shape[1]).to(rows.dtype)
    mdca = (probs.mean(0) - onehot.mean(0)).abs().mean()
    return torch.nn.functional.cross_entropy(rows, labels) + beta * mdca


@pytest.mark.parametrize('reduction', ['mean', 'sum'])
@pytest.mark.parametrize('beta', [0.0, 1.0, 5.0])
@pytest.mark.parametrize('weighted', [False, True])
def test_matches_reference(make_batch, pixel_weight, reduction, beta, weighted):
    logits, target = make_batch()
    class_weight = [0.5, 1.0, 2.0, 1.5, 0.0] if weighted else None
    weight = pixel_weight if weighted else None
    loss = mdca_loss(logits, target, beta=beta, weight=weight, class_weight=class_weight,
                     reduction=reduction)
    expected = reference_mdca(logits, target, beta, weight=weight, class_weight=class_weight,
                              reduction=reduction)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)


def test_defaults_and_batch_statistic(make_batch):
    logits, target = make_batch()
    np.testing.assert_allclose(mdca_loss(logits, target).item(),
                               reference_mdca(logits, target, 1.0), rtol=1e-5)
    # The MDCA term is a batch statistic: it is not the mean of per-image MDCA terms.
    halves = [mdca_loss(logits[i:i + 1], target[i:i + 1], beta=1.0) for i in range(2)]
    assert not torch.isclose(mdca_loss(logits, target), sum(halves) / 2)


def test_zero_weight_pixels_leave_the_term(make_batch):
    logits, target = make_batch()
    weight = torch.ones(target.shape)
    weight[1] = 0.0  # e.g. pixels dropped by an OHEM sampler
    expected = reference_mdca(logits[:1], target[:1], 1.0)
    # The CE mean still divides by all non-ignored pixels (mmseg's convention), the MDCA term not.
    ce_full = torch.nn.functional.cross_entropy(logits[:1], target[:1], ignore_index=IGNORE,
                                                reduction='sum') / (target != IGNORE).sum()
    ce_first = torch.nn.functional.cross_entropy(logits[:1], target[:1], ignore_index=IGNORE)
    np.testing.assert_allclose(mdca_loss(logits, target, weight=weight).item(),
                               expected - ce_first.item() + ce_full.item(), rtol=1e-5)


def test_gradients(make_batch):
    logits, target = make_batch(dtype=torch.float64)
    ours = logits.clone().requires_grad_()
    mdca_loss(ours, target, beta=2.0).backward()
    ref = logits.clone().requires_grad_()
    torch_reference(ref, target, 2.0).backward()
    torch.testing.assert_close(ours.grad, ref.grad)
    assert torch.autograd.gradcheck(lambda z: mdca_loss(z, target, beta=2.0),
                                    (logits.clone().requires_grad_(),), fast_mode=True)


def test_common_behaviour(check_common):
    check_common(mdca_loss)


def test_reduction_none_is_rejected(make_batch):
    logits, target = make_batch()
    with pytest.raises(ValueError, match="reduction='none'"):
        mdca_loss(logits, target, reduction='none')


@pytest.mark.parametrize('beta', [-1.0, float('nan'), None])
def test_bad_beta(make_batch, beta):
    logits, target = make_batch()
    with pytest.raises(ValueError, match='beta'):
        mdca_loss(logits, target, beta=beta)
