import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import softmax_focal_loss
from calibseg.models.losses import SoftmaxFocalLoss


def test_build_from_config(seg_batch):
    loss = MODELS.build(dict(type='SoftmaxFocalLoss', gamma=2.0, loss_weight=0.5,
                             class_weight=[1.0, 2.0, 1.0, 1.0, 0.5]))
    assert isinstance(loss, SoftmaxFocalLoss) and loss.loss_name == 'loss_focal'
    logits, target = seg_batch
    expected = 0.5 * softmax_focal_loss(logits, target, gamma=2.0,
                                        class_weight=[1.0, 2.0, 1.0, 1.0, 0.5])
    torch.testing.assert_close(loss(logits, target, weight=None, ignore_index=255), expected)
    assert SoftmaxFocalLoss().gamma == 3.0


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses(dict(type='SoftmaxFocalLoss'))
    assert set(losses) == {'loss_focal', 'acc_seg'}
    torch.testing.assert_close(losses['loss_focal'],
                               softmax_focal_loss(logits.detach(), seg_batch[1]))
    losses['loss_focal'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('cfg, error', [
    (dict(gamma=-1.0), ValueError), (dict(gama=3.0), TypeError),
    (dict(loss_name='focal'), ValueError), (dict(class_weight=[1.0, -1.0]), ValueError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='SoftmaxFocalLoss', **cfg))
