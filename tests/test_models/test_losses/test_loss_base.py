"""Behaviour every registered calibseg loss shares through ``CalibrationLossBase``."""
import numpy as np
import pytest
import torch
from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS

from calibseg.models.losses import (
    ACLSLoss,
    AdaptiveFocalLoss,
    CalibrationLossBase,
    LabelSmoothingLoss,
    MbLSLoss,
    MDCALoss,
    SoftmaxFocalLoss,
)

ALL = [SoftmaxFocalLoss, AdaptiveFocalLoss, LabelSmoothingLoss, MbLSLoss, MDCALoss, ACLSLoss]
CLASS_WEIGHT = [1.0, 2.0, 0.5, 1.0, 0.0]


@pytest.mark.parametrize('cls', ALL)
def test_registered_and_keyword_only(cls):
    assert MODELS.get(cls.__name__) is cls and issubclass(cls, CalibrationLossBase)
    with pytest.raises(TypeError):
        cls(1.0)
    with pytest.raises(TypeError):
        cls(reductoin='mean')


@pytest.mark.parametrize('cls', ALL)
def test_call_ignore_index_overrides_the_module(cls, seg_batch):
    logits, target = seg_batch
    loss = cls(ignore_index=7)
    other = target.masked_fill(target == 255, 9)
    torch.testing.assert_close(loss(logits, other, ignore_index=9),
                               loss(logits, target, ignore_index=255))
    with pytest.raises(ValueError, match='ignore_index=7'):  # label 255 is no longer ignored
        loss(logits, target)


@pytest.mark.parametrize('cls', ALL)
def test_reduction_override_weight_and_avg_factor(cls, seg_batch):
    logits, target = seg_batch
    loss = cls(loss_weight=3.0)
    mean = loss(logits, target)
    total = loss(logits, target, reduction_override='sum')
    valid = int((target != 255).sum())
    if cls is MDCALoss:  # the MDCA term is added once after the CE reduction
        assert total > mean
    else:
        torch.testing.assert_close(total / valid, mean)
        per_pixel = loss(logits, target, reduction_override='none')
        assert per_pixel.shape == target.shape and per_pixel[target == 255].eq(0).all()
        torch.testing.assert_close(per_pixel.sum(), total)
        torch.testing.assert_close(loss(logits, target, avg_factor=2.0 * valid),
                                   mean / 2, rtol=1e-5, atol=0)
        weight = torch.rand(target.shape, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(loss(logits, target, weight=weight, reduction_override='none'),
                                   per_pixel * weight)
    with pytest.raises(ValueError, match='reduction'):
        loss(logits, target, reduction_override='avg')
    with pytest.raises(TypeError):
        loss(logits, target, wieght=None)
    with pytest.raises(TypeError):  # keyword-only, as mmseg's heads call it
        loss(logits, target, None)


@pytest.mark.parametrize('cls', ALL)
def test_class_weight_list_or_file(cls, seg_batch, tmp_path):
    logits, target = seg_batch
    path = tmp_path / 'weights.npy'
    np.save(path, np.array(CLASS_WEIGHT))
    from_list, from_file = cls(class_weight=CLASS_WEIGHT), cls(class_weight=str(path))
    assert from_file.class_weight.dtype == torch.float32
    torch.testing.assert_close(from_list(logits, target), from_file(logits, target))
    assert not torch.isclose(from_list(logits, target), cls()(logits, target))
    # A buffer: follows .to(), stays out of checkpoints.
    assert 'class_weight' not in from_list.state_dict()
    assert from_list.to(torch.float64).class_weight.dtype == torch.float64
    assert f'class_weight={CLASS_WEIGHT!r}' in repr(cls(class_weight=CLASS_WEIGHT))
    with pytest.raises(ValueError, match='class_weight has 3 entries'):
        cls(class_weight=[1.0, 1.0, 1.0])(logits, target)


@pytest.mark.parametrize('cls', ALL)
@pytest.mark.parametrize('cfg', [dict(loss_name='focal'), dict(loss_name=None),
                                 dict(loss_weight=float('nan')), dict(reduction='avg'),
                                 dict(ignore_index='255')])
def test_bad_common_options(cls, cfg):
    with pytest.raises(ValueError):
        cls(**cfg)


@pytest.mark.parametrize('cls', ALL)
def test_inside_head_with_ohem_and_beside_cross_entropy(cls, head_losses, seg_batch):
    # OHEM passes a per-pixel seg_weight; a second loss of another name is reported separately.
    ce = dict(type='CrossEntropyLoss', avg_non_ignore=True, loss_weight=0.4)
    losses, logits = head_losses([dict(type=cls.__name__), ce],
                                 sampler=dict(type='OHEMPixelSampler', thresh=0.7, min_kept=20))
    name = cls().loss_name
    assert set(losses) == {name, 'loss_ce', 'acc_seg'}
    assert torch.isfinite(losses[name]) and losses[name] > 0
    sum(value for key, value in losses.items() if 'loss' in key).backward()
    assert torch.isfinite(logits.grad).all()


def test_losses_of_one_name_are_summed(head_losses, seg_batch):
    losses, logits = head_losses([dict(type='MbLSLoss', loss_name='loss_cal'),
                                  dict(type='MDCALoss', loss_name='loss_cal')])
    logits, target = seg_batch
    torch.testing.assert_close(losses['loss_cal'],
                               MbLSLoss()(logits, target) + MDCALoss()(logits, target))


def test_matches_mmseg_cross_entropy_in_the_limit(seg_batch):
    # gamma=0 focal, smoothing=0 and zero-weight regularisers are mmseg's
    # CrossEntropyLoss(avg_non_ignore=True), per-pixel weight included.
    logits, target = seg_batch
    weight = torch.rand(target.shape, generator=torch.Generator().manual_seed(1))
    expected = CrossEntropyLoss(avg_non_ignore=True)(logits, target, weight=weight,
                                                     ignore_index=255)
    # With class weights mmseg's avg_non_ignore path indexes class_weight by label 255 and fails
    # (IndexError), so compare with its documented semantics: sum c_y w CE / #non-ignored.
    per_pixel = torch.nn.functional.cross_entropy(
        logits, target, weight=torch.tensor(CLASS_WEIGHT), ignore_index=255, reduction='none')
    expected_cw = (per_pixel * weight).sum() / (target != 255).sum()
    for cls, options in ((SoftmaxFocalLoss, dict(gamma=0.0)),
                         (LabelSmoothingLoss, dict(smoothing=0.0)), (MbLSLoss, dict(alpha=0.0)),
                         (MDCALoss, dict(beta=0.0)), (ACLSLoss, dict(alpha=0.0))):
        torch.testing.assert_close(cls(**options)(logits, target, weight=weight,
                                                  ignore_index=255), expected)
        torch.testing.assert_close(
            cls(class_weight=CLASS_WEIGHT, **options)(logits, target, weight=weight,
                                                      ignore_index=255), expected_cw)


def _every_registered_loss():
    """``(name, module, channels)`` for every loss module calibseg.models.losses exports."""
    import inspect

    import calibseg.models.losses as losses
    found = []
    for name in losses.__all__:
        cls = getattr(losses, name)
        if inspect.isclass(cls) and issubclass(cls, torch.nn.Module) and cls is not CalibrationLossBase:
            found.append((name, cls(alpha=0.1, seed=0) if name == 'SCBCELoss' else cls(),
                          1 if name == 'SCBCELoss' else 3))
    return found


def _call(name, loss, logits, target):
    if name == 'SampleWiseFocalLoss':
        with loss.gamma_context(torch.full((logits.shape[0], 1, 1), 2.0)):
            return loss(logits, target)
    return loss(logits, target)


def test_every_registered_loss_on_an_empty_batch_and_on_infinite_logits():
    """Issue 17: N = 0 gives an exact zero with a (zero-sized) gradient; a -inf logit is refused by name."""
    cases = _every_registered_loss()
    assert {'SoftmaxFocalLoss', 'SCBCELoss', 'SECELoss', 'SampleWiseFocalLoss'} <= {name for name, _, _ in cases}
    for name, loss, channels in cases:
        logits = torch.randn(0, channels, 4, 4, requires_grad=True)
        value = _call(name, loss, logits, torch.zeros(0, 4, 4, dtype=torch.long))
        assert value.shape == () and value.item() == 0.0, name
        value.backward()
        assert logits.grad is not None and logits.grad.shape == logits.shape, name
        logits = torch.randn(2, channels, 4, 4)
        logits[0, 0, 1, 1] = float('-inf')
        with pytest.raises(ValueError, match='logits contain 0 NaN and 1 infinite'):
            _call(name, loss, logits, torch.ones(2, 4, 4, dtype=torch.long))
