import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import label_smoothing_loss
from calibseg.models.losses import LabelSmoothingLoss


def test_build_from_config(seg_batch):
    loss = MODELS.build(dict(type='LabelSmoothingLoss', smoothing=0.1, loss_name='loss_ce_ls'))
    assert isinstance(loss, LabelSmoothingLoss) and loss.loss_name == 'loss_ce_ls'
    logits, target = seg_batch
    torch.testing.assert_close(loss(logits, target, weight=None, ignore_index=255),
                               label_smoothing_loss(logits, target, smoothing=0.1))
    assert LabelSmoothingLoss().smoothing == 0.05
    assert LabelSmoothingLoss().loss_name == 'loss_ls'


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses(dict(type='LabelSmoothingLoss'))
    assert set(losses) == {'loss_ls', 'acc_seg'}
    torch.testing.assert_close(losses['loss_ls'],
                               label_smoothing_loss(logits.detach(), seg_batch[1]))
    losses['loss_ls'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('cfg, error', [
    (dict(smoothing=1.0), ValueError), (dict(smoothing=-0.1), ValueError),
    (dict(label_smoothing=0.1), TypeError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='LabelSmoothingLoss', **cfg))
