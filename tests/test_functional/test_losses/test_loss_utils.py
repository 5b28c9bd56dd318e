"""Tests of the shared stages in ``calibseg/functional/losses/utils.py`` and of the layer boundary."""
import ast
from pathlib import Path

import pytest
import torch

import calibseg.functional.losses as F
from calibseg.functional.losses import flatten_pixels, prepare_pixels, reduce_loss
from calibseg.functional.losses.utils import check_class_weight, check_in_range, check_non_negative

IGNORE = 255
LOSSES = [F.softmax_focal_loss, F.adaptive_focal_loss, F.label_smoothing_loss, F.mbls_loss,
          F.mdca_loss, F.acls_loss]


def test_functional_losses_import_no_openmmlab_package():
    package = Path(F.__file__).parent
    for path in package.glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or '']
            else:
                continue
            assert not any(name.split('.')[0].startswith('mm') for name in names), (path, names)


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
    with pytest.raises(ValueError, match="margin must be a finite number >= 0, got -1"):
        check_non_negative('margin', -1)
    with pytest.raises(ValueError, match=r'smoothing must lie in \[0.0, 1.0\), got 1.0'):
        check_in_range('smoothing', 1.0, 0.0, 1.0, high_inclusive=False)
    with pytest.raises(ValueError, match='class_weight must be a 1-D'):
        check_class_weight([[1.0, 2.0]])
    assert check_class_weight((1, 2)).dtype == torch.float32
