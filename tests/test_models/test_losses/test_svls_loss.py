import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import svls_loss
from calibseg.models.losses import SVLSLoss


def test_build_from_config(seg_batch):
    loss = MODELS.build(dict(type='SVLSLoss', kernel_size=5, sigma=2.0, border='replicate', loss_weight=2.0))
    assert isinstance(loss, SVLSLoss) and loss.loss_name == 'loss_svls'
    assert (loss.kernel_size, loss.sigma, loss.border) == (5, 2.0, 'replicate')
    logits, target = seg_batch
    torch.testing.assert_close(loss(logits, target, weight=None, ignore_index=255),
                               2.0 * svls_loss(logits, target, kernel_size=5, sigma=2.0, border='replicate'))
    defaults = SVLSLoss()
    assert (defaults.kernel_size, defaults.sigma, defaults.border, defaults.loss_weight) == \
        (3, 1.0, 'renormalise', 1.0)
    assert 'kernel_size=3' in repr(defaults)


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses(dict(type='SVLSLoss'))
    assert set(losses) == {'loss_svls', 'acc_seg'}
    torch.testing.assert_close(losses['loss_svls'], svls_loss(logits.detach(), seg_batch[1]))
    losses['loss_svls'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('cfg, error', [
    (dict(kernel_size=2), ValueError), (dict(sigma=0.0), ValueError), (dict(border='zero'), ValueError),
    (dict(kernel=3), TypeError), (dict(loss_name='svls'), ValueError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='SVLSLoss', **cfg))
