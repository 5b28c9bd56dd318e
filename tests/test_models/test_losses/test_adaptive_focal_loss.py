import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import adaptive_focal_loss
from calibseg.models.losses import AdaptiveFocalLoss


def test_build_from_config(seg_batch):
    cfg = dict(type='AdaptiveFocalLoss', gamma_hard=4.0, gamma_easy=2.0, threshold=0.3)
    loss = MODELS.build(cfg)
    assert isinstance(loss, AdaptiveFocalLoss) and loss.loss_name == 'loss_adaptive_focal'
    logits, target = seg_batch
    torch.testing.assert_close(
        loss(logits, target, weight=None, ignore_index=255),
        adaptive_focal_loss(logits, target, gamma_hard=4.0, gamma_easy=2.0, threshold=0.3))
    defaults = AdaptiveFocalLoss()
    assert (defaults.gamma_hard, defaults.gamma_easy, defaults.threshold) == (5.0, 3.0, 0.2)


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses(dict(type='AdaptiveFocalLoss'))
    assert set(losses) == {'loss_adaptive_focal', 'acc_seg'}
    torch.testing.assert_close(losses['loss_adaptive_focal'],
                               adaptive_focal_loss(logits.detach(), seg_batch[1]))
    losses['loss_adaptive_focal'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('cfg, error', [
    (dict(gamma_hard=-1.0), ValueError), (dict(gamma_easy=-1.0), ValueError),
    (dict(threshold=2.0), ValueError), (dict(gamma=3.0), TypeError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='AdaptiveFocalLoss', **cfg))
