
import numpy as np
import pytest
import torch
from loss_reference import logsumexp, per_pixel_reference

from calibseg.functional.losses import label_smoothing_loss

IGNORE = 255


def reference_ls(logits, target, smoothing, class_weight=None):
    """Per-pixel (1 - a) NLL + a mean_k(-log p_k), by explicit loops."""
    def pixel(row, y, _):
        lse = logsumexp(row)
        uniform = sum(lse - v for v in row) / len(row)
        loss = (1 - smoothing) * (lse - row[y]) + smoothing * uniform
        return loss * (1.0 if class_weight is None else class_weight[y])
    return per_pixel_reference(logits, target, pixel)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('smoothing', [0.0, 0.05, 0.3])
@pytest.mark.parametrize('weighted', [False, True])
def test_matches_reference(make_batch, pixel_weight, reduce_reference, reduction, smoothing,
                           weighted):
    logits, target = make_batch()
    class_weight = [0.5, 1.0, 2.0, 1.5, 0.0] if weighted else None
    weight = pixel_weight if weighted else None
    loss = label_smoothing_loss(logits, target, smoothing=smoothing, weight=weight,
                                class_weight=class_weight, reduction=reduction)
    expected = reduce_reference(reference_ls(logits, target, smoothing, class_weight), target,
                                weight, reduction)
    np.testing.assert_allclose(loss.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_default_and_torch_equivalence(make_batch):
    logits, target = make_batch()
    np.testing.assert_allclose(label_smoothing_loss(logits, target).item(),
                               np.nanmean(reference_ls(logits, target, 0.05)), rtol=1e-5)
    # PyTorch's label_smoothing uses the same target (1 - a) onehot + a / C.
    torch.testing.assert_close(
        label_smoothing_loss(logits, target, smoothing=0.1),
        torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE,
                                          label_smoothing=0.1))


def test_gradcheck(make_batch):
    logits, target = make_batch(dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: label_smoothing_loss(z, target, smoothing=0.2),
                                    (logits.requires_grad_(),), fast_mode=True)


def test_common_behaviour(check_common):
    check_common(label_smoothing_loss)


@pytest.mark.parametrize('smoothing', [-0.01, 1.0, 1.5, float('nan')])
def test_bad_smoothing(make_batch, smoothing):
    logits, target = make_batch()
    with pytest.raises(ValueError, match='smoothing'):
        label_smoothing_loss(logits, target, smoothing=smoothing)
