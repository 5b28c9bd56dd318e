import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import mdca_loss
from calibseg.models.losses import MDCALoss


def test_build_from_config(seg_batch):
    loss = MODELS.build(dict(type='MDCALoss', beta=5.0))
    assert isinstance(loss, MDCALoss) and loss.loss_name == 'loss_mdca'
    logits, target = seg_batch
    torch.testing.assert_close(loss(logits, target, weight=None, ignore_index=255),
                               mdca_loss(logits, target, beta=5.0))
    assert MDCALoss().beta == 1.0


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses(dict(type='MDCALoss'))
    assert set(losses) == {'loss_mdca', 'acc_seg'}
    torch.testing.assert_close(losses['loss_mdca'], mdca_loss(logits.detach(), seg_batch[1]))
    losses['loss_mdca'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_reduction_none_is_rejected(seg_batch):
    with pytest.raises(ValueError, match="reduction='none'"):
        MDCALoss(reduction='none')
    with pytest.raises(ValueError, match="reduction='none'"):
        MDCALoss()(*seg_batch, reduction_override='none')


@pytest.mark.parametrize('cfg, error', [(dict(beta=-1.0), ValueError), (dict(alpha=1.0), TypeError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='MDCALoss', **cfg))
