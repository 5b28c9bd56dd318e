import math

import pytest
import torch

from calibseg.functional.calibration.inputs import (
    check_input_type,
    iter_binary_chunks,
    iter_multiclass_blocks,
    valid_columns,
    values_ok,
)


@pytest.mark.parametrize('x_shape,y_shape', [((10, 3), (10,)), ((3, 4, 5), (4, 5)), ((2, 3, 4, 5), (2, 4, 5)),
                                              ((2, 3, 7), (2, 7)), ((2, 3, 2, 2, 2), (2, 2, 2, 2))])
def test_multiclass_layouts(x_shape, y_shape):
    x = torch.randn(x_shape)
    y = torch.randint(0, 3, y_shape)
    chunks = list(iter_multiclass_blocks(x, y, 3, row_block=3))
    assert all(c.shape[0] == 3 and c.shape[1] == t.shape[0] for c, t in chunks)
    if len(x_shape) == 2:
        assert all(t.shape[0] <= 3 for _, t in chunks)
    else:
        assert all(c.is_contiguous() for c, _ in chunks)  # one view per image
    assert sum(t.numel() for _, t in chunks) == y.numel()
    xs = torch.cat([c for c, _ in chunks], 1)
    class_dim = 0 if x_shape == (3, 4, 5) else 1
    want = x.movedim(class_dim, 0).reshape(3, -1)
    assert torch.equal(xs, want)


def test_ambiguous_three_d_is_read_as_khw():
    x = torch.randn(3, 3, 5)
    y = torch.randint(0, 3, (3, 5))
    first = next(iter(iter_multiclass_blocks(x, y, 3, row_block=100)))[0]
    assert torch.equal(first, x.reshape(3, 15))


def test_binary_layouts_and_errors():
    y = torch.randint(0, 2, (2, 4, 4))
    for x in (torch.rand(2, 4, 4), torch.rand(2, 1, 4, 4)):
        chunks = list(iter_binary_chunks(x, y, chunk_size=5))
        assert torch.equal(torch.cat([c for c, _ in chunks]), x.reshape(-1))
    chunks = list(iter_binary_chunks(torch.rand(1, 4, 4), y[0], chunk_size=100))
    assert chunks[0][0].shape == (16,)
    with pytest.raises(ValueError, match=r'\(2, 4, 4\).*\(2, 4, 5\)'):
        iter_binary_chunks(torch.rand(2, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long), chunk_size=4)
    with pytest.raises(ValueError, match='must be tensors'):
        iter_binary_chunks([0.5], torch.zeros(1, dtype=torch.long), chunk_size=4)


def test_values_ok_and_valid_columns():
    assert values_ok(torch.tensor([0.0, 1.0]), 'probs') and not values_ok(torch.tensor([1.5]), 'probs')
    assert values_ok(torch.tensor([-3.0, 9.0]), 'logits') and not values_ok(torch.tensor([math.inf]), 'logits')
    assert not values_ok(torch.tensor([math.nan, 0.5]), 'logits') and values_ok(torch.zeros(0), 'logits')
    y = torch.tensor([0, 255, 2, 0])
    assert valid_columns(y, 255, exclude_background=True).tolist() == [2]
    assert valid_columns(y, 255, exclude_background=False).tolist() == [0, 2, 3]
    assert valid_columns(y, None, exclude_background=False) is None
    assert valid_columns(torch.tensor([255]), 255, exclude_background=False).numel() == 0
    with pytest.raises(ValueError, match='input_type'):
        check_input_type('probabilities')


def test_probabilities_that_do_not_sum_to_one_are_refused():
    from calibseg.functional.calibration import CalibrationStatistics
    from calibseg.functional.calibration.inputs import PROB_SUM_ATOL, check_prob_sums

    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.5], [0.2, 0.3, 0.5]])  # pixel 1 sums to 1.5 (issue 17)
    y = torch.tensor([0, 1, 2])
    stats = CalibrationStatistics(3, input_type='probs')
    with pytest.raises(ValueError, match=r'1 of 3 evaluated pixels do not sum to 1 \(worst sum 1\.5'):
        stats.update(p, y, name='img7')
    with pytest.raises(ValueError, match='img7: '):
        stats.update(p, y, name='img7')
    assert stats.num_pixels == 0  # refused before anything was added
    # only evaluated pixels are checked: the same pixel ignored passes
    stats.update(p, torch.tensor([0, 255, 2]))
    assert stats.num_pixels == 2
    # within the documented tolerance (float32 / float64 rounding of a softmax) is accepted, beyond it is not
    tol = PROB_SUM_ATOL[torch.float32]
    ok = torch.tensor([[0.6 + 0.9 * tol, 0.4]], dtype=torch.float64)
    check_prob_sums(ok.t(), None)
    with pytest.raises(ValueError, match='tolerance 0.001'):
        check_prob_sums(torch.tensor([[0.6 + 1.1 * tol, 0.4]], dtype=torch.float64).t(), None)
    # half precision rounds each entry: its tolerance is wider
    half = torch.softmax(torch.randn(50, 21), 1).to(torch.bfloat16)
    CalibrationStatistics(21, input_type='probs').update(half, torch.randint(0, 21, (50,)))
    # one-channel maps have no class sum to check
    from calibseg.functional.calibration import BinaryCalibrationStatistics
    BinaryCalibrationStatistics(input_type='probs').update(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))
