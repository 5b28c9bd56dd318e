"""SampleWiseFocalLoss: softmax focal loss with a per-pixel or per-image γ given by the model at each step."""
import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import softmax_focal_loss
from calibseg.models.losses import SampleWiseFocalLoss

IGNORE = 255


def test_per_pixel_gamma_matches_a_hand_computed_value():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])
    gamma = torch.tensor([[[1.0, 4.0]]], dtype=torch.float64)
    p = torch.sigmoid(torch.tensor([2.0, -1.0], dtype=torch.float64))  # p_y of both pixels
    expected = (-(1 - p) ** gamma.reshape(-1) * p.log()).mean()
    loss = SampleWiseFocalLoss()
    with loss.gamma_context(gamma):
        torch.testing.assert_close(loss(logits, target), expected)


def test_per_image_gamma_and_gradient_wrt_gamma(seg_batch):
    logits, target = seg_batch
    gamma = torch.tensor([[[1.5]], [[4.0]]], requires_grad=True)  # (N, 1, 1)
    loss = MODELS.build(dict(type='SampleWiseFocalLoss', loss_weight=0.5))
    with loss.gamma_context(gamma):
        value = loss(logits, target, weight=None, ignore_index=IGNORE)
    per_image = [softmax_focal_loss(logits[i:i + 1], target[i:i + 1], gamma=float(gamma[i]), reduction='sum')
                 for i in range(2)]
    torch.testing.assert_close(value, 0.5 * sum(per_image) / int((target != IGNORE).sum()))
    (grad,) = torch.autograd.grad(value, gamma)
    assert bool((grad < 0).all())  # a larger gamma shrinks every term (1 - p_y < 1)


def test_gamma_is_required_and_the_context_restores_it(seg_batch):
    logits, target = seg_batch
    loss = SampleWiseFocalLoss()
    with pytest.raises(RuntimeError, match='gamma_context'):
        loss(logits, target)
    outer, inner = torch.full((1, 1, 1), 2.0), torch.full((1, 1, 1), 0.0)
    with loss.gamma_context(outer):
        with loss.gamma_context(inner):
            torch.testing.assert_close(loss(logits, target), softmax_focal_loss(logits, target, gamma=0.0))
        torch.testing.assert_close(loss(logits, target), softmax_focal_loss(logits, target, gamma=2.0))
    with pytest.raises(RuntimeError):
        loss(logits, target)
    with pytest.raises(TypeError, match='floating-point'):
        with loss.gamma_context(2.0):
            pass
    with loss.gamma_context(torch.ones(3, 3)), pytest.raises(ValueError, match='broadcast'):
        loss(logits, target)


@pytest.mark.parametrize('cfg, error', [(dict(gamma=3.0), TypeError), (dict(loss_name='focal'), ValueError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='SampleWiseFocalLoss', **cfg))
