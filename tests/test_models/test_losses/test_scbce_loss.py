"""SCBCELoss (registered): config build, seeds, adaptive alpha, inside a real one-channel mmseg head."""
import copy
import math

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.models.decode_heads import FCNHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from calibseg.functional.losses.scbce import scbce_loss
from calibseg.models.losses.scbce import SCBCELoss

IGNORE = 255


@pytest.fixture
def binary_batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 6, 6, generator=gen) * 3
    target = torch.randint(0, 2, (3, 6, 6), generator=gen)
    target[torch.rand(3, 6, 6, generator=gen) < 0.15] = IGNORE
    return logits, target


def _samples(target):
    samples = []
    for label in target:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label.unsqueeze(0))
        samples.append(sample)
    return samples


def _head(loss_decode, out_channels=1):
    return FCNHead(in_channels=4, channels=4, num_convs=1, num_classes=2, out_channels=out_channels,
                   threshold=0.5 if out_channels == 1 else None, norm_cfg=dict(type='BN'),
                   loss_decode=loss_decode)


def test_build_from_config_and_defaults(binary_batch):
    loss = MODELS.build(dict(type='SCBCELoss', beta=1.0, alpha=0.3, seed=0, loss_weight=2.0))
    assert isinstance(loss, SCBCELoss) and loss.loss_name == 'loss_scbce'
    assert (loss.beta, loss.alpha, loss.expected, loss.seed) == (1.0, 0.3, False, 0)
    logits, target = binary_batch
    value = loss(logits, target, weight=None, ignore_index=IGNORE)
    reference = scbce_loss(logits, target, alpha=0.3, beta=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(value, 2.0 * reference)
    defaults = SCBCELoss()
    assert (defaults.beta, defaults.alpha, defaults.loss_weight, defaults.reduction) == (2.0, None, 1.0, 'mean')
    assert 'beta=2.0' in repr(defaults)


def test_seed_reproducibility_and_copies(binary_batch):
    logits, target = binary_batch
    a, b = SCBCELoss(alpha=0.25, seed=5), SCBCELoss(alpha=0.25, seed=5)
    run_a = torch.stack([a(logits, target) for _ in range(20)])
    assert torch.equal(run_a, torch.stack([b(logits, target) for _ in range(20)]))
    other = SCBCELoss(alpha=0.25, seed=6)
    assert not torch.equal(run_a, torch.stack([other(logits, target) for _ in range(20)]))
    clone = copy.deepcopy(a)  # the generator state travels with the module
    assert torch.equal(torch.stack([a(logits, target) for _ in range(5)]),
                       torch.stack([clone(logits, target) for _ in range(5)]))


def test_adaptive_alpha_per_call(binary_batch):
    logits, target = binary_batch
    loss = SCBCELoss(seed=0, expected=True)
    with pytest.raises(ValueError, match='adaptive mode'):
        loss(logits, target)
    alpha = torch.tensor([0.0, 0.1, 0.25])
    torch.testing.assert_close(loss(logits, target, alpha=alpha),
                               scbce_loss(logits, target, alpha=alpha, beta=2.0, expected=True))
    fixed = SCBCELoss(alpha=0.2, expected=True)  # a per-call alpha overrides the constructor's
    torch.testing.assert_close(fixed(logits, target, alpha=alpha), loss(logits, target, alpha=alpha))
    with pytest.raises(ValueError, match=r'alpha must lie'):
        loss(logits, target, alpha=torch.tensor([0.0, 0.1, 0.3]))


def test_monte_carlo_mean_matches_expected_through_the_module(binary_batch):
    logits, target = binary_batch
    stochastic = SCBCELoss(alpha=0.2, seed=11)
    draws = torch.stack([stochastic(logits, target) for _ in range(2000)]).double()
    expected = SCBCELoss(alpha=0.2, expected=True)(logits, target).item()
    assert abs(draws.mean().item() - expected) < 4.5 * draws.std().item() / math.sqrt(draws.numel())


def test_in_one_channel_decode_head(binary_batch):
    logits, target = binary_batch
    head = _head(dict(type='SCBCELoss', beta=2.0, alpha=0.1, expected=True))
    leaf = logits.clone().requires_grad_()
    losses = head.loss_by_feat(leaf, _samples(target))
    assert set(losses) == {'loss_scbce', 'acc_seg'}
    torch.testing.assert_close(losses['loss_scbce'],
                               scbce_loss(logits, target, alpha=0.1, beta=2.0, expected=True))
    losses['loss_scbce'].backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0

    stochastic = _head(dict(type='SCBCELoss', alpha=0.25, seed=0))
    value = stochastic.loss_by_feat(logits, _samples(target))['loss_scbce']
    torch.testing.assert_close(
        value, scbce_loss(logits, target, alpha=0.25, generator=torch.Generator().manual_seed(0)))


def test_multi_channel_head_is_rejected(binary_batch):
    logits, target = binary_batch
    head = _head(dict(type='SCBCELoss', alpha=0.1, seed=0), out_channels=2)
    with pytest.raises(ValueError, match='one-channel heads'):
        head.loss_by_feat(logits.repeat(1, 2, 1, 1), _samples(target))


@pytest.mark.parametrize('cfg, error, match', [
    (dict(beta=0.0), ValueError, 'beta'),
    (dict(beta=-2.0), ValueError, 'beta'),
    (dict(beta=2.0, alpha=0.3), ValueError, 'alpha'),
    (dict(alpha=-0.1), ValueError, 'alpha'),
    (dict(expected='yes'), ValueError, 'expected'),
    (dict(seed=1.5), ValueError, 'seed'),
    (dict(loss_name='scbce'), ValueError, 'loss_name'),
    (dict(alpah=0.1), TypeError, 'alpah'),
])
def test_bad_config_fails_at_build(cfg, error, match):
    with pytest.raises(error, match=match):
        MODELS.build(dict(type='SCBCELoss', **cfg))


def test_soft_target_through_the_module(binary_batch):
    logits, target = binary_batch
    soft = torch.rand(target.shape, generator=torch.Generator().manual_seed(1))
    assert SCBCELoss.accepts_soft_target and not MODELS.get('LabelSmoothingLoss').accepts_soft_target
    loss = SCBCELoss(alpha=0.1, expected=True, loss_weight=0.5)
    value = loss(logits, target, weight=None, ignore_index=IGNORE, soft_target=soft)
    torch.testing.assert_close(value, 0.5 * scbce_loss(logits, target, alpha=0.1, expected=True, soft_target=soft))
    assert not torch.allclose(value, loss(logits, target, ignore_index=IGNORE))  # the soft values are used
    bce = SCBCELoss(alpha=0.0, expected=True)(logits, target, soft_target=soft)  # plain BCE against s
    valid = target != IGNORE
    reference = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0][valid], soft[valid])
    torch.testing.assert_close(bce, reference)
