"""RankMixup's per-pixel ranking losses (MRL, M-NDCG): hand-computed values, a naive per-pixel reference,
gradients, per-sample masks, ignored pixels and bad input."""
import math

import pytest
import torch

from calibseg.functional.losses.rankmixup import mixup_pair_valid, mndcg_loss, mrl_loss

IGNORE = 255


def _two_class_logits(confidences):
    """Logits ``[log(c / (1 - c)), 0]`` whose max-softmax is ``c`` (for ``c > 0.5``): shape ``(2, len)``."""
    c = torch.tensor(confidences, dtype=torch.float64)
    return torch.stack([torch.log(c / (1 - c)), torch.zeros_like(c)])


# ------------------------------------------------------------------------------------------------- references
def naive_mrl(raw, mixed, target, perm, margin):
    """Per-pixel loops: mean over the pixels whose two sources are labelled and differ."""
    total, count = 0.0, 0
    batch, _, height, width = raw.shape
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                y, y_partner = int(target[b, h, w]), int(target[perm[b], h, w])
                if IGNORE in (y, y_partner) or y == y_partner:
                    continue
                total += max(0.0, float(mixed[b, :, h, w].max()) - float(raw[b, :, h, w].max()) + margin)
                count += 1
    return total / max(count, 1)


def naive_mndcg(raw, mixed, target, perms, lams, same_label='keep'):
    """Per-pixel lists built entry by entry, sorted with Python's stable sort, DCG/IDCG by their definition.

    A mixup whose two sources share the label has relevance 1 (the authors' mixed one-hot label:
    lam + (1 - lam)) with ``same_label='keep'``, and is left out with ``'mask'``."""
    total, count = 0.0, 0
    num_mixups, batch, _, height, width = mixed.shape
    for b in range(batch):
        for h in range(height):
            for w in range(width):
                y = int(target[b, h, w])
                if y == IGNORE:
                    continue
                entries = []
                for t in range(num_mixups):
                    y_partner = int(target[perms[t][b], h, w])
                    if y_partner == IGNORE or (y_partner == y and same_label == 'mask'):
                        continue
                    conf = float(torch.softmax(mixed[t, b, :, h, w], 0).max())
                    entries.append((1.0 if y_partner == y else max(lams[t], 1 - lams[t]), conf))
                if not entries:
                    continue
                entries = [(1.0, float(torch.softmax(raw[b, :, h, w], 0).max()))] + \
                    sorted(entries, key=lambda e: -e[0])
                dcg = sum(c / math.log2(q + 2) for q, (_, c) in enumerate(entries))
                idcg = sum(r / math.log2(q + 2) for q, (r, _) in enumerate(entries))
                total += 1 - min(dcg, idcg) / max(dcg, idcg)
                count += 1
    return total / max(count, 1)


def _random_case(batch=3, classes=4, height=3, width=4, num_mixups=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(batch, classes, height, width, generator=g, dtype=dtype) * 2
    mixed = torch.randn(num_mixups, batch, classes, height, width, generator=g, dtype=dtype) * 2
    target = torch.randint(0, 3, (batch, height, width), generator=g)  # few classes: many same-label pairs
    target[torch.rand(batch, height, width, generator=g) < 0.2] = IGNORE
    perms = torch.stack([torch.randperm(batch, generator=g) for _ in range(num_mixups)])
    lams = torch.rand(num_mixups, generator=g, dtype=torch.float64).tolist()
    return raw, mixed, target, perms, lams


# ------------------------------------------------------------------------------------------------- MRL
def test_mrl_hand_computed():
    # image 0 labels [0, 1, 255], image 1 labels [2, 1, 0]; swapped (perm [1, 0]).
    target = torch.tensor([[[0, 1, IGNORE]], [[2, 1, 0]]])
    raw = torch.zeros(2, 3, 1, 3, dtype=torch.float64)
    mixed = torch.zeros(2, 3, 1, 3, dtype=torch.float64)
    raw[0, 1, 0, 0], mixed[0, 2, 0, 0] = 3.0, 2.5  # relu(2.5 - 3 + 1) = 0.5
    raw[1, 0, 0, 0], mixed[1, 1, 0, 0] = 1.0, 0.2  # relu(0.2 - 1 + 1) = 0.2
    raw[1, 2, 0, 2], mixed[1, 2, 0, 2] = 4.0, 1.0  # relu(1 - 4 + 1) = 0 (partner pixel ignored anyway)
    mixed[0, 0, 0, 1] = mixed[1, 0, 0, 1] = 50.0  # same label 1 in both sources: excluded
    mixed[0, 0, 0, 2] = 50.0  # ignored in image 0: excluded
    mixed[1, 0, 0, 2] = 50.0  # partner (image 0) ignored: excluded
    perm = torch.tensor([1, 0])
    loss = mrl_loss(raw, mixed, target, perm, margin=1.0)
    assert loss.item() == pytest.approx((0.5 + 0.2) / 2)
    per_pixel = mrl_loss(raw, mixed, target, perm, margin=1.0, reduction='none')
    torch.testing.assert_close(per_pixel, torch.tensor([[[0.5, 0, 0]], [[0.2, 0, 0]]], dtype=torch.float64))
    assert mrl_loss(raw, mixed, target, perm, margin=1.0, reduction='sum').item() == pytest.approx(0.7)
    # margin 0: only the pixel whose mixed top logit exceeds the raw one would count; none does here
    assert mrl_loss(raw, mixed, target, perm, margin=0.0).item() == 0.0


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('margin', [0.0, 1.0, 2.0])
def test_mrl_matches_naive_loops(seed, margin):
    raw, mixed, target, perms, _ = _random_case(seed=seed)
    loss = mrl_loss(raw, mixed[0], target, perms[0], margin=margin)
    assert loss.item() == pytest.approx(naive_mrl(raw, mixed[0], target, perms[0].tolist(), margin), rel=1e-12)


def test_mrl_masks_per_sample_not_by_valid_fraction():
    """A batch whose extra image pairs with itself (all its pixels invalid) has the same MRL as without it; the
    authors' broadcast mask would scale the mean by the valid fraction instead."""
    raw, mixed, target, _, _ = _random_case(batch=2, seed=3)
    target[target == IGNORE] = 0
    target[0] = 1
    target[1] = 2  # every pixel of the pair is valid
    perm = torch.tensor([1, 0])
    alone = mrl_loss(raw, mixed[0], target, perm, margin=2.0)
    raw3 = torch.cat([raw, raw[:1]])
    mixed3 = torch.cat([mixed[0], mixed[0, :1] + 5.0])
    target3 = torch.cat([target, target[:1]])
    with_self_pair = mrl_loss(raw3, mixed3, target3, torch.tensor([1, 0, 2]), margin=2.0)
    torch.testing.assert_close(with_self_pair, alone)
    assert alone.item() > 0


def test_mrl_gradcheck():
    raw, mixed, target, perms, _ = _random_case(batch=2, classes=3, height=2, width=3, seed=4)
    raw.requires_grad_()
    mixed0 = mixed[0].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: mrl_loss(a, b, target, perms[0], margin=2.0), (raw, mixed0))


# ------------------------------------------------------------------------------------------------- M-NDCG
def _one_pixel_case(valid_mixups=(True, True, True)):
    """One raw pixel (confidence 0.8) and three mixups: lams 0.3, 0.9, 0.5 (relevances 0.7, 0.9, 0.5),
    confidences 0.9, 0.6, 0.55. Labels: raw image 0 has class 0, image 1 class 1 (distinct) and image 2
    class 0 (the same); a mixup pairs image 0 with image 1 when valid, else with image 2."""
    raw = torch.zeros(3, 2, 1, 1, dtype=torch.float64)
    raw[0, :, 0, 0] = _two_class_logits([0.8])[:, 0]
    mixed = torch.zeros(3, 3, 2, 1, 1, dtype=torch.float64)
    mixed[:, 0, :, 0, 0] = _two_class_logits([0.9, 0.6, 0.55]).t()
    target = torch.tensor([0, 1, 0]).reshape(3, 1, 1)
    perms = torch.tensor([[1 if ok else 2, 0, 1] for ok in valid_mixups])  # images 1, 2 pair elsewhere
    return raw, mixed, target, perms, [0.3, 0.9, 0.5]


def test_mndcg_hand_computed():
    raw, mixed, target, perms, lams = _one_pixel_case()
    # order by relevance: raw (1, 0.8), mixup 1 (0.9, 0.6), mixup 0 (0.7, 0.9), mixup 2 (0.5, 0.55)
    dcg = 0.8 / 1 + 0.6 / math.log2(3) + 0.9 / 2 + 0.55 / math.log2(5)
    idcg = 1.0 / 1 + 0.9 / math.log2(3) + 0.7 / 2 + 0.5 / math.log2(5)
    expected_pixel = 1 - min(dcg, idcg) / max(dcg, idcg)
    per_pixel = mndcg_loss(raw, mixed, target, perms, lams, reduction='none')
    assert per_pixel[0, 0, 0].item() == pytest.approx(expected_pixel, rel=1e-12)
    # images 1 and 2 are ranked too (with their own partners); the mean is over the three valid pixels
    assert mndcg_loss(raw, mixed, target, perms, lams).item() == pytest.approx(per_pixel.sum().item() / 3)
    assert mndcg_loss(raw, mixed, target, perms, lams).item() == pytest.approx(
        naive_mndcg(raw, mixed, target, perms.tolist(), lams), rel=1e-12)


def test_mndcg_keeps_same_label_entries_with_relevance_one_by_default():
    # the authors' rule: mixup 2 (lam 0.5) pairs image 0 with image 2 (same class), so its relevance is
    # 0.5 + 0.5 = 1 and it moves up to second place: raw (1, 0.8), mixup 2 (1, 0.55), mixup 1 (0.9, 0.6),
    # mixup 0 (0.7, 0.9)
    raw, mixed, target, perms, lams = _one_pixel_case(valid_mixups=(True, True, False))
    dcg = 0.8 / 1 + 0.55 / math.log2(3) + 0.6 / 2 + 0.9 / math.log2(5)
    idcg = 1.0 / 1 + 1.0 / math.log2(3) + 0.9 / 2 + 0.7 / math.log2(5)
    per_pixel = mndcg_loss(raw, mixed, target, perms, lams, reduction='none')
    assert per_pixel[0, 0, 0].item() == pytest.approx(1 - min(dcg, idcg) / max(dcg, idcg), rel=1e-12)
    assert torch.equal(per_pixel, mndcg_loss(raw, mixed, target, perms, lams, same_label='keep', reduction='none'))
    # every mixup same-label: all relevances 1, ties in draw order (confidences 0.9, 0.6, 0.55); still ranked
    raw, mixed, target, perms, lams = _one_pixel_case(valid_mixups=(False, False, False))
    dcg = 0.8 / 1 + 0.9 / math.log2(3) + 0.6 / 2 + 0.55 / math.log2(5)
    idcg = 1.0 / 1 + 1.0 / math.log2(3) + 1.0 / 2 + 1.0 / math.log2(5)
    per_pixel = mndcg_loss(raw, mixed, target, perms, lams, reduction='none')
    assert per_pixel[0, 0, 0].item() == pytest.approx(1 - min(dcg, idcg) / max(dcg, idcg), rel=1e-12)


def test_mndcg_mask_option_removes_same_label_entries_and_recounts_positions():
    raw, mixed, target, perms, lams = _one_pixel_case(valid_mixups=(True, False, True))
    # mixup 1 (relevance 0.9) pairs image 0 with image 2 (same class): removed, the others move up
    dcg = 0.8 / 1 + 0.9 / math.log2(3) + 0.55 / 2
    idcg = 1.0 / 1 + 0.7 / math.log2(3) + 0.5 / 2
    per_pixel = mndcg_loss(raw, mixed, target, perms, lams, same_label='mask', reduction='none')
    assert per_pixel[0, 0, 0].item() == pytest.approx(1 - min(dcg, idcg) / max(dcg, idcg), rel=1e-12)
    # kept by default, with relevance 1: raw (1, 0.8), mixup 1 (1, 0.6), mixup 0 (0.7, 0.9), mixup 2 (0.5, 0.55)
    dcg = 0.8 / 1 + 0.6 / math.log2(3) + 0.9 / 2 + 0.55 / math.log2(5)
    idcg = 1.0 / 1 + 1.0 / math.log2(3) + 0.7 / 2 + 0.5 / math.log2(5)
    per_pixel = mndcg_loss(raw, mixed, target, perms, lams, reduction='none')
    assert per_pixel[0, 0, 0].item() == pytest.approx(1 - min(dcg, idcg) / max(dcg, idcg), rel=1e-12)
    # no valid mixup at all: the pixel takes no part
    raw, mixed, target, perms, lams = _one_pixel_case(valid_mixups=(False, False, False))
    assert mndcg_loss(raw, mixed, target, perms, lams, same_label='mask', reduction='none')[0, 0, 0].item() == 0.0
    with pytest.raises(ValueError, match='same_label'):
        mndcg_loss(raw, mixed, target, perms, lams, same_label='drop')


def test_mndcg_is_symmetric_in_over_and_under_confidence():
    """Confidences equal to the relevances give 0; the loss is 1 - min/max of DCG and IDCG."""
    raw = _two_class_logits([0.999999])[None, :, :, None].permute(0, 1, 2, 3)  # (1, 2, 1, 1)
    lams = [0.8, 0.6]
    mixed = torch.stack([_two_class_logits([0.8])[None, :, :, None],
                         _two_class_logits([0.6])[None, :, :, None]])  # (2, 1, 2, 1, 1)
    raw2 = torch.cat([raw, raw])
    mixed2 = torch.cat([mixed, mixed], dim=1)
    target = torch.tensor([0, 1]).reshape(2, 1, 1)
    perms = torch.tensor([[1, 0], [1, 0]])
    assert mndcg_loss(raw2, mixed2, target, perms, lams).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('num_mixups', [2, 3])
@pytest.mark.parametrize('same_label', ['keep', 'mask'])
def test_mndcg_matches_naive_loops(seed, num_mixups, same_label):
    raw, mixed, target, perms, lams = _random_case(seed=seed, num_mixups=num_mixups)
    loss = mndcg_loss(raw, mixed, target, perms, lams, same_label=same_label)
    want = naive_mndcg(raw, mixed, target, perms.tolist(), lams, same_label=same_label)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert loss.item() > 0


@pytest.mark.parametrize('same_label', ['keep', 'mask'])
def test_mndcg_ties_in_relevance_keep_draw_order(same_label):
    raw, mixed, target, perms, _ = _random_case(seed=5)
    lams = [0.3, 0.7, 0.3]  # three equal relevances 0.7
    loss = mndcg_loss(raw, mixed, target, perms, torch.tensor(lams, dtype=torch.float64), same_label=same_label)
    want = naive_mndcg(raw, mixed, target, perms.tolist(), lams, same_label=same_label)
    assert loss.item() == pytest.approx(want, rel=1e-12)


def test_mndcg_gradcheck():
    raw, mixed, target, perms, lams = _random_case(batch=2, classes=3, height=2, width=2, seed=6)
    raw.requires_grad_()
    mixed.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: mndcg_loss(a, b, target, perms, lams), (raw, mixed))


# ------------------------------------------------------------------------------------------------- both
@pytest.mark.parametrize('mode', ['mrl', 'mndcg'])
def test_ignored_pixels_have_no_effect(mode):
    raw, mixed, target, perms, lams = _random_case(seed=7)
    if mode == 'mrl':
        mixed = mixed[:1]
        perms = perms[:1]

    def loss_and_grads(a, b):
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        if mode == 'mrl':
            value = mrl_loss(a, b[0], target, perms[0], margin=2.0)
        else:
            value = mndcg_loss(a, b, target, perms, lams)
        value.backward()
        return value.detach(), a.grad, b.grad

    value, grad_raw, grad_mixed = loss_and_grads(raw, mixed)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(raw)
    assert ignored.any()
    raw2 = torch.where(ignored, torch.randn_like(raw) * 100, raw)
    mixed2 = torch.where(ignored.unsqueeze(0), torch.randn_like(mixed) * 100, mixed)
    value2, grad_raw2, grad_mixed2 = loss_and_grads(raw2, mixed2)
    assert value2 == value
    torch.testing.assert_close(grad_raw2, grad_raw, rtol=0, atol=0)
    torch.testing.assert_close(grad_mixed2, grad_mixed, rtol=0, atol=0)
    assert not grad_raw[ignored].any() and not grad_mixed[ignored.unsqueeze(0).expand_as(mixed)].any()
    assert grad_raw.abs().sum() > 0


def test_pair_mask():
    target = torch.tensor([[0, 1, IGNORE], [0, 2, 1], [3, 1, 1]])
    valid = mixup_pair_valid(target, torch.tensor([1, 2, 0]))
    expected = torch.tensor([[False, True, False], [True, True, False], [True, False, False]])
    assert torch.equal(valid, expected)
    assert not mixup_pair_valid(target, torch.arange(3)).any()  # an image mixed with itself never counts


def test_half_precision_is_computed_in_float32():
    raw, mixed, target, perms, lams = _random_case(seed=8, dtype=torch.float32)
    for fn, args in [(mrl_loss, (raw.half(), mixed[0].half(), target, perms[0])),
                     (mndcg_loss, (raw.half(), mixed.half(), target, perms, lams))]:
        value = fn(*args)
        reference = fn(*[a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args])
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, reference)


def test_no_valid_pixel_gives_a_connected_zero():
    raw, mixed, target, _, lams = _random_case(seed=9)
    raw.requires_grad_()
    identity = torch.arange(3)
    for value in (mrl_loss(raw, mixed[0], target, identity),
                  mndcg_loss(raw, mixed, target, identity.repeat(3, 1), lams, same_label='mask')):
        assert value.item() == 0.0 and value.requires_grad
    # the authors' rule ranks an image mixed with itself (relevance 1); only ignored partners leave nothing
    assert mndcg_loss(raw, mixed, target, identity.repeat(3, 1), lams).item() > 0
    unlabelled = torch.full_like(target, IGNORE)
    unlabelled[0] = target[0]
    value = mndcg_loss(raw, mixed, unlabelled, torch.tensor([[1, 2, 0]] * 3), lams)
    assert value.item() == 0.0 and value.requires_grad


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises():
    raw, mixed, target, perms, lams = _random_case(seed=10)
    with pytest.raises(TypeError, match='logits must be a floating-point'):
        mrl_loss(raw.long(), mixed[0], target, perms[0])
    with pytest.raises(TypeError, match='target must be an integer'):
        mrl_loss(raw, mixed[0], target.double(), perms[0])
    with pytest.raises(TypeError, match='mixed_logits must be a floating-point'):
        mrl_loss(raw, mixed[0].long(), target, perms[0])
    with pytest.raises(ValueError, match='mixed_logits must have shape'):
        mrl_loss(raw, mixed[0, :2], target, perms[0])
    with pytest.raises(ValueError, match='does not match logits'):
        mrl_loss(raw, mixed[0], target[:, :2], perms[0])
    with pytest.raises(ValueError, match='at least 2 classes'):
        mrl_loss(raw[:, :1], mixed[0, :, :1], target.clamp(max=0), perms[0])
    with pytest.raises(ValueError, match=r'target contain values \[7\] outside \[0, 4\)'):
        mrl_loss(raw, mixed[0], target.masked_fill(target == 0, 7), perms[0])
    with pytest.raises(ValueError, match='permutation must have shape'):
        mrl_loss(raw, mixed[0], target, perms)
    with pytest.raises(ValueError, match=r'indices in \[0, 3\)'):
        mrl_loss(raw, mixed[0], target, torch.tensor([0, 1, 3]))
    with pytest.raises(TypeError, match='permutation must be an integer'):
        mrl_loss(raw, mixed[0], target, perms[0].double())
    with pytest.raises(ValueError, match='margin must be a finite number >= 0'):
        mrl_loss(raw, mixed[0], target, perms[0], margin=-1.0)
    with pytest.raises(ValueError, match='reduction must be one of'):
        mrl_loss(raw, mixed[0], target, perms[0], reduction='avg')
    with pytest.raises(ValueError, match=r'lams must lie in \[0, 1\]'):
        mndcg_loss(raw, mixed, target, perms, [0.5, 1.5, 0.2])
    with pytest.raises(ValueError, match=r'lams must lie in \[0, 1\]'):
        mndcg_loss(raw, mixed, target, perms, [0.5, float('nan'), 0.2])
    with pytest.raises(ValueError, match='one mixing coefficient per mixup'):
        mndcg_loss(raw, mixed, target, perms, [0.5, 0.2])
    with pytest.raises(ValueError, match=r'shape \(T, B, C, \*spatial\)'):
        mndcg_loss(raw, mixed[0], target, perms, lams)
    with pytest.raises(ValueError, match='permutations must have shape'):
        mndcg_loss(raw, mixed, target, perms[:2], lams)
    with pytest.raises(ValueError, match='at least one mixup'):
        mndcg_loss(raw, mixed[:0], target, perms[:0], [])
