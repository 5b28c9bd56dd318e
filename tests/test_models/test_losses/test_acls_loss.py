import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import acls_loss
from calibseg.models.losses import ACLSLoss


def test_build_from_config(seg_batch):
    options = dict(pos_lambda=0.5, neg_lambda=0.2, alpha=0.3, margin=2.0)
    loss = MODELS.build(dict(type='ACLSLoss', **options))
    assert isinstance(loss, ACLSLoss) and loss.loss_name == 'loss_acls'
    logits, target = seg_batch
    torch.testing.assert_close(loss(logits, target, weight=None, ignore_index=255),
                               acls_loss(logits, target, **options))
    defaults = ACLSLoss()
    assert (defaults.pos_lambda, defaults.neg_lambda, defaults.alpha, defaults.margin) == (
        1.0, 0.1, 0.1, 10.0)


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses(dict(type='ACLSLoss', margin=2.0))
    assert set(losses) == {'loss_acls', 'acc_seg'}
    torch.testing.assert_close(losses['loss_acls'],
                               acls_loss(logits.detach(), seg_batch[1], margin=2.0))
    losses['loss_acls'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('cfg, error', [
    (dict(pos_lambda=-1.0), ValueError), (dict(neg_lambda=-1.0), ValueError),
    (dict(alpha=-1.0), ValueError), (dict(margin=-1.0), ValueError),
    (dict(lambda_pos=1.0), TypeError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='ACLSLoss', **cfg))
