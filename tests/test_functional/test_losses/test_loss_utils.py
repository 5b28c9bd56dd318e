"""Tests of the shared stages in ``calibseg/functional/losses/utils.py``, and the contract of every loss on empty
batches and non-finite logits."""
import math

import pytest
import torch

import calibseg.functional.losses as F
from calibseg.functional.losses import flatten_pixels, prepare_pixels, reduce_loss
from calibseg.functional.losses.utils import check_class_weight, check_ignore_index, check_reduction

IGNORE = 255
LOSSES = [F.softmax_focal_loss, F.adaptive_focal_loss, F.label_smoothing_loss, F.mbls_loss,
          F.mdca_loss, F.acls_loss]


def test_flatten_pixels_removes_ignored(make_batch):
    logits, target = make_batch()
    rows, labels = flatten_pixels(logits, target)
    expected_rows = [logits[n, :, h, w] for n in range(2) for h in range(4) for w in range(3)
                     if target[n, h, w] != IGNORE]
    assert rows.shape == (len(expected_rows), 5) and labels.dtype == torch.int64
    torch.testing.assert_close(rows, torch.stack(expected_rows))
    torch.testing.assert_close(labels, target[target != IGNORE])


def test_prepare_pixels_layout(make_batch):
    logits, target = make_batch(dtype=torch.float16)
    pixels = prepare_pixels(logits, target, weight=torch.full((2, 1, 1), 2.0))
    assert pixels.logits.shape == (2, 5, 12) and pixels.logits.dtype == torch.float32
    assert pixels.target.shape == (2, 12) and pixels.target[~pixels.valid].eq(0).all()
    assert pixels.num_valid == int((target != IGNORE).sum())
    assert pixels.weight.shape == (2, 12) and pixels.weight.eq(2.0).all()
    with pytest.raises(ValueError, match='weight of shape'):
        prepare_pixels(logits, target, weight=torch.ones(3, 4, 3))


def test_reduce_loss_none_keeps_label_shape(make_batch):
    logits, target = make_batch()
    pixels = prepare_pixels(logits, target)
    out = reduce_loss(torch.ones(2, 12), pixels, reduction='none')
    torch.testing.assert_close(out, (target != IGNORE).float())


@pytest.mark.parametrize('loss_fn', LOSSES)
def test_other_layouts(loss_fn):
    # (N, C) classification and (N, C, D, H, W) volumes go through the same code path.
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen)
    target = torch.tensor([0, 1, 2, 3, IGNORE, 1])
    flat = loss_fn(logits, target)
    as_image = loss_fn(logits.view(6, 4, 1, 1), target.view(6, 1, 1))
    torch.testing.assert_close(flat, as_image)
    volume = torch.randn(2, 4, 2, 3, 3, generator=gen)
    labels = torch.randint(0, 4, (2, 2, 3, 3), generator=gen)
    assert torch.isfinite(loss_fn(volume, labels))


@pytest.mark.parametrize('loss_fn', LOSSES)
def test_ignore_index_is_a_label_value(loss_fn, make_batch):
    logits, target = make_batch()
    other = target.masked_fill(target == IGNORE, -100)
    torch.testing.assert_close(loss_fn(logits, other, ignore_index=-100), loss_fn(logits, target))
    with pytest.raises(ValueError, match='ignore_index must be an int'):
        loss_fn(logits, target, ignore_index=255.0)


@pytest.mark.parametrize('loss_fn', LOSSES)
def test_one_class_is_rejected(loss_fn):
    with pytest.raises(ValueError, match='at least 2 classes'):
        loss_fn(torch.randn(2, 1, 3, 3), torch.zeros(2, 3, 3, dtype=torch.long))


def test_checks_name_the_argument():
    with pytest.raises(ValueError, match='ignore_index must be an int, got 255.0'):
        check_ignore_index(255.0)
    with pytest.raises(ValueError, match=r"reduction must be one of \('none', 'mean', 'sum'\), got 'avg'"):
        check_reduction('avg')
    with pytest.raises(ValueError, match="avg_factor is only defined for reduction='mean'"):
        check_reduction('sum', avg_factor=3.0)
    with pytest.raises(ValueError, match='class_weight must be a 1-D'):
        check_class_weight([[1.0, 2.0]])
    assert check_class_weight((1, 2)).dtype == torch.float32


def _mixed(z):
    """A mixup of every image with the next one (RankMixup's inputs), kept differentiable."""
    partner = torch.arange(z.shape[0]).roll(1)
    return 0.7 * z + 0.3 * z[partner], partner


def _mrl(z, y, **kw):
    mixed, partner = _mixed(z)
    return F.mrl_loss(z, mixed, y, partner, **kw)


def _mndcg(z, y, **kw):
    mixed, partner = _mixed(z)
    return F.mndcg_loss(z, torch.stack([mixed, mixed]), y, torch.stack([partner, partner]), [0.7, 0.6], **kw)


def _scbce(z, y, **kw):
    return F.scbce_loss(z[:, :1], y.clamp(max=1), alpha=0.1, generator=torch.Generator().manual_seed(0), **kw)


#: Every ``*_loss`` that calibseg.functional.losses exports, as ``(logits (N, 5, H, W), labels) -> loss``: the
#: softmax losses as they are, the others through an adapter (a new loss without one is called like a softmax loss).
ADAPTERS = dict(scbce_loss=_scbce, mrl_loss=_mrl, mndcg_loss=_mndcg)
EVERY_LOSS = {name: ADAPTERS.get(name, getattr(F, name)) for name in F.__all__
              if name.endswith('_loss') and name != 'reduce_loss'}
NO_REDUCTION_OPTION = {'sece_loss'}  # and MDCA has no 'none' (a batch statistic)


def test_every_loss_is_covered():
    assert {'softmax_focal_loss', 'label_smoothing_loss', 'acls_loss', 'sece_loss', 'scbce_loss', 'mrl_loss',
            'mndcg_loss'} <= set(EVERY_LOSS)


@pytest.mark.parametrize('name', sorted(EVERY_LOSS))
def test_empty_batch_gives_a_zero_loss_with_a_zero_gradient(name):
    """N = 0 (e.g. a rank left without images): an exact zero connected to the graph, not a reshape error."""
    loss_fn = EVERY_LOSS[name]
    logits = torch.randn(0, 5, 4, 3, requires_grad=True)
    target = torch.zeros(0, 4, 3, dtype=torch.long)
    loss = loss_fn(logits, target)
    assert loss.shape == () and loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and logits.grad.shape == logits.shape
    if name not in NO_REDUCTION_OPTION:
        assert loss_fn(logits, target, reduction='sum').item() == 0.0
        if name != 'mdca_loss':
            assert loss_fn(logits, target, reduction='none').shape == (0, 4, 3)


@pytest.mark.parametrize('name', sorted(EVERY_LOSS))
@pytest.mark.parametrize('bad', [float('-inf'), float('inf'), float('nan')])
def test_non_finite_logits_are_refused(name, bad, make_batch):
    """A -inf logit (a class masked out) would make label smoothing, MbLS or ACLS infinite and their gradients
    non-finite: refused with the count, whatever the loss, at valid and at ignored pixels alike."""
    logits, target = make_batch()
    logits[0, 0, 1, 1] = bad  # a non-target class of a valid pixel (class 0; the binary loss reads channel 0)
    logits[1, 0, 0, 0] = bad  # and an ignored pixel
    target[0, 1, 1], target[1, 0, 0] = 2, IGNORE
    counts = '2 NaN and 0 infinite' if math.isnan(bad) else '0 NaN and 2 infinite'
    with pytest.raises(ValueError, match=rf'^logits contain {counts} value\(s\) among \d+; calibseg losses need '
                                         'finite logits'):
        EVERY_LOSS[name](logits, target)


def test_a_masked_class_gives_an_infinite_acls_loss_without_the_check(make_batch):
    """Why -inf is refused rather than passed through: the ACLS and label-smoothing values themselves are infinite
    (their penalties reach every class), so no finite "correct" value exists to return."""
    logits, target = make_batch(dtype=torch.float64)
    logits[0, 3, 1, 1] = -1e300  # the largest finite stand-in for -inf: the loss explodes, it does not saturate
    target[0, 1, 1] = 0
    assert F.acls_loss(logits, target).item() > 1e200
    assert F.label_smoothing_loss(logits, target, smoothing=0.1).item() > 1e290
