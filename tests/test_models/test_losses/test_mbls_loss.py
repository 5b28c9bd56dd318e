import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import mbls_loss
from calibseg.models.losses import MbLSLoss


def test_build_from_config(seg_batch):
    loss = MODELS.build(dict(type='MbLSLoss', margin=2.0, alpha=0.5, loss_weight=2.0))
    assert isinstance(loss, MbLSLoss) and loss.loss_name == 'loss_mbls'
    assert (loss.margin, loss.alpha) == (2.0, 0.5)
    logits, target = seg_batch
    torch.testing.assert_close(loss(logits, target, weight=None, ignore_index=255),
                               2.0 * mbls_loss(logits, target, margin=2.0, alpha=0.5))
    defaults = MbLSLoss()
    assert (defaults.margin, defaults.alpha, defaults.loss_weight) == (10.0, 0.1, 1.0)


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses(dict(type='MbLSLoss', margin=2.0))
    assert set(losses) == {'loss_mbls', 'acc_seg'}
    torch.testing.assert_close(losses['loss_mbls'],
                               mbls_loss(logits.detach(), seg_batch[1], margin=2.0))
    losses['loss_mbls'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('cfg, error', [
    (dict(margin=-1.0), ValueError), (dict(alpha=-0.1), ValueError),
    (dict(marign=10.0), TypeError), (dict(loss_name='mbls'), ValueError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='MbLSLoss', **cfg))
