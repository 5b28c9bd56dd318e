import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import nacl_loss
from calibseg.models.losses import NACLLoss


def test_build_from_config(seg_batch):
    options = dict(alpha=0.5, kernel_size=5, kernel='gaussian', sigma=2.0, distance='l2', border='replicate')
    loss = MODELS.build(dict(type='NACLLoss', loss_weight=2.0, **options))
    assert isinstance(loss, NACLLoss) and loss.loss_name == 'loss_nacl'
    assert {name: getattr(loss, name) for name in options} == options
    logits, target = seg_batch
    torch.testing.assert_close(loss(logits, target, weight=None, ignore_index=255),
                               2.0 * nacl_loss(logits, target, **options))
    defaults = NACLLoss()
    assert (defaults.alpha, defaults.kernel_size, defaults.kernel, defaults.distance, defaults.border,
            defaults.loss_weight) == (0.1, 3, 'mean', 'l1', 'renormalise', 1.0)


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses(dict(type='NACLLoss', alpha=0.2))
    assert set(losses) == {'loss_nacl', 'acc_seg'}
    torch.testing.assert_close(losses['loss_nacl'], nacl_loss(logits.detach(), seg_batch[1], alpha=0.2))
    losses['loss_nacl'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('cfg, error', [
    (dict(alpha=-1.0), ValueError), (dict(kernel_size=4), ValueError), (dict(kernel='svls'), ValueError),
    (dict(distance='l3'), ValueError), (dict(sigma=-1.0), ValueError), (dict(margin=1.0), TypeError),
    (dict(loss_name='nacl'), ValueError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='NACLLoss', **cfg))
