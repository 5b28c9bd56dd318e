"""SECELoss: the differentiable SECE of a batch's pixels, against a naive implementation written here."""
import pytest
import torch
from mmseg.registry import MODELS

from calibseg.functional.losses import sece_loss
from calibseg.models.losses import SECELoss

IGNORE = 255


def naive_sece(logits, target, h=0.05, ignore_index=IGNORE):
    """Loop-free but independent: (P, C) rows of the valid pixels, full N x N kernel, Nadaraya-Watson."""
    num_classes = logits.shape[1]
    rows = logits.permute(0, 2, 3, 1).reshape(-1, num_classes)
    labels = target.reshape(-1)
    keep = labels != ignore_index
    rows, labels = rows[keep], labels[keep]
    probs = torch.softmax(rows, dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).to(conf.dtype)
    kernel = torch.exp(-0.5 * ((conf[:, None] - conf[None, :]) / h) ** 2)
    a_hat = (kernel @ correct) / kernel.sum(dim=1)
    return (a_hat - conf).abs().mean()


def batch(seed=0, n=2, c=4, size=5, dtype=torch.float64, ignore_frac=0.2):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, size, size, generator=gen, dtype=torch.float64) * 2).to(dtype)
    target = torch.randint(0, c, (n, size, size), generator=gen)
    target[torch.rand(n, size, size, generator=gen) < ignore_frac] = IGNORE
    return logits, target


def test_value_matches_naive_and_loss_weight():
    logits, target = batch()
    loss = MODELS.build(dict(type='SECELoss', loss_weight=2.0))
    assert isinstance(loss, SECELoss) and loss.loss_name == 'loss_sece'
    expected = naive_sece(logits, target)
    assert 0.0 < float(expected) < 1.0
    torch.testing.assert_close(loss(logits, target, weight=None, ignore_index=IGNORE), 2.0 * expected)
    wide = SECELoss(bandwidth=0.3)
    torch.testing.assert_close(wide(logits, target), naive_sece(logits, target, h=0.3))


def test_hand_computed_two_pixels():
    # two valid pixels, one correct: c = (p1, p2); with a tiny bandwidth each pixel is its own neighbourhood
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])  # pixel 0 correct (class 0), pixel 1 wrong (predicts class 1)
    p1 = torch.sigmoid(torch.tensor(2.0, dtype=torch.float64))
    p2 = torch.sigmoid(torch.tensor(1.0, dtype=torch.float64))
    expected = ((1 - p1) + p2) / 2  # |1 - p1| and |0 - p2|
    torch.testing.assert_close(SECELoss(bandwidth=1e-3)(logits, target), expected)


def test_gradcheck_wrt_logits():
    logits, target = batch(seed=1, size=4)
    logits.requires_grad_(True)
    loss = SECELoss(method='exact')
    assert torch.autograd.gradcheck(lambda z: loss(z, target), (logits,))
    # autograd through the naive formula gives the same gradient
    (g,) = torch.autograd.grad(loss(logits, target), logits)
    (g_ref,) = torch.autograd.grad(naive_sece(logits, target), logits)
    torch.testing.assert_close(g, g_ref)


def test_grid_evaluation_close_to_naive_on_a_larger_batch():
    logits, target = batch(seed=2, n=2, c=5, size=48)  # 4608 pixels before ignoring: above the exact limit
    logits.requires_grad_(True)
    value = SECELoss(method='grid')(logits, target)
    ref = naive_sece(logits, target)
    assert float(value.detach()) == pytest.approx(float(ref.detach()), abs=2e-4)
    (g,) = torch.autograd.grad(value, logits)
    (g_ref,) = torch.autograd.grad(ref, logits)
    assert float((g - g_ref).abs().max()) <= 2e-2 * float(g_ref.abs().max())


def test_ignored_pixels_have_no_effect():
    logits, target = batch(seed=3)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    changed = torch.where(ignored, logits * 7 + 3, logits).requires_grad_(True)
    value = SECELoss()(changed, target)
    torch.testing.assert_close(value, naive_sece(logits, target))
    (grad,) = torch.autograd.grad(value, changed)
    assert float(grad[ignored].abs().max()) == 0.0 and float(grad.abs().max()) > 0
    # every pixel ignored: an exact zero that still back-propagates
    empty = logits.clone().requires_grad_(True)
    zero = SECELoss()(empty, torch.full_like(target, IGNORE))
    zero.backward()
    assert float(zero) == 0.0 and torch.equal(empty.grad, torch.zeros_like(empty))


def test_subsampling_is_seeded_and_uniform_without_replacement():
    logits, target = batch(seed=4, size=8)
    rows = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])[(target != IGNORE).reshape(-1)]
    labels = target.reshape(-1)[(target != IGNORE).reshape(-1)]
    first, second = SECELoss(max_pixels=20, seed=7), SECELoss(max_pixels=20, seed=7)
    values = [first(logits, target) for _ in range(2)]
    torch.testing.assert_close(values[0], second(logits, target))  # same seed, same first subset
    assert float(values[0]) != float(values[1])  # successive calls draw new subsets
    gen = torch.Generator().manual_seed(7)
    keep = torch.randperm(rows.shape[0], generator=gen)[:20]
    sub_logits = rows[keep].T.reshape(1, -1, 20, 1)
    torch.testing.assert_close(values[0], naive_sece(sub_logits, labels[keep].reshape(1, 20, 1)))
    # a cap above the number of valid pixels changes nothing
    torch.testing.assert_close(SECELoss(max_pixels=10_000)(logits, target), naive_sece(logits, target))
    torch.testing.assert_close(sece_loss(logits, target), naive_sece(logits, target))


def test_in_decode_head(head_losses, seg_batch):
    losses, logits = head_losses([dict(type='CrossEntropyLoss', avg_non_ignore=True), dict(type='SECELoss')])
    assert {'loss_ce', 'loss_sece', 'acc_seg'} == set(losses)
    torch.testing.assert_close(losses['loss_sece'], naive_sece(logits.detach(), seg_batch[1]),
                               rtol=1e-5, atol=1e-6)
    losses['loss_sece'].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize('cfg, error', [
    (dict(bandwidth=0.0), ValueError), (dict(bandwidth=-1), ValueError), (dict(method='fft'), ValueError),
    (dict(max_pixels=1), ValueError), (dict(max_pixels=2.5), ValueError), (dict(loss_name='sece'), ValueError),
    (dict(seed=1.5), ValueError), (dict(bandwith=0.1), TypeError)])
def test_bad_config_fails_at_build(cfg, error):
    with pytest.raises(error):
        MODELS.build(dict(type='SECELoss', **cfg))


def test_per_pixel_weight_is_rejected():
    logits, target = batch()
    with pytest.raises(ValueError, match='per-pixel weight'):
        SECELoss()(logits, target, weight=torch.ones_like(target, dtype=logits.dtype))
