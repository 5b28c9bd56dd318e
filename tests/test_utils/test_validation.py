"""calibseg.utils.validation: one argument order (name, value), clear messages, no bool as a number."""
import numpy as np
import pytest
import torch

from calibseg.utils.validation import (
    check_binary_logits,
    check_bounds,
    check_choice,
    check_finite,
    check_in_range,
    check_int,
    check_labels,
    check_logits,
    check_non_negative,
    check_positive_float,
    check_positive_int,
)


def test_number_checks_accept_and_normalise():
    assert check_finite('x', -3) == -3.0 and isinstance(check_finite('x', -3), float)
    assert check_non_negative('margin', 0) == 0.0
    assert check_positive_float('lr', np.float32(0.5)) == 0.5
    assert check_in_range('p', 1.0, 0.0, 1.0, high_inclusive=True) == 1.0
    assert check_positive_int('n', np.int64(3)) == 3 and type(check_positive_int('n', np.int64(3))) is int
    assert check_positive_int('n', None, allow_none=True) is None
    assert check_positive_int('n', 0, minimum=0) == 0
    assert check_int('ignore_index', -1) == -1
    assert check_bounds('t_min', 0.05, 't_max', 20) == (0.05, 20.0)
    assert check_choice('reduction', 'mean', ('none', 'mean')) == 'mean'


@pytest.mark.parametrize('call,message', [
    (lambda: check_finite('loss_weight', float('nan')), 'loss_weight must be a finite number, got nan'),
    (lambda: check_finite('loss_weight', True), 'loss_weight must be a finite number, got True'),
    (lambda: check_non_negative('gamma', -0.5), 'gamma must be a finite number >= 0, got -0.5'),
    (lambda: check_non_negative('gamma', float('inf')), 'gamma must be a finite number >= 0, got inf'),
    (lambda: check_positive_float('tol', 0), 'tol must be a finite number > 0, got 0'),
    (lambda: check_positive_float('tol', '1'), "tol must be a finite number > 0, got '1'"),
    (lambda: check_in_range('smoothing', 1.0, 0.0, 1.0, high_inclusive=False),
     r'smoothing must lie in \[0.0, 1.0\), got 1.0'),
    (lambda: check_in_range('p', 0.0, 0.0, 1.0, high_inclusive=True, low_inclusive=False),
     r'p must lie in \(0.0, 1.0\], got 0.0'),
    (lambda: check_positive_int('max_iter', 2.0), 'max_iter must be an integer >= 1, got 2.0'),
    (lambda: check_positive_int('max_iter', True), 'max_iter must be an integer >= 1, got True'),
    (lambda: check_positive_int('num_bins', 1, minimum=2), 'num_bins must be an integer >= 2, got 1'),
    (lambda: check_int('ignore_index', 255.0), 'ignore_index must be an int, got 255.0'),
    (lambda: check_bounds('t_min', 2, 't_max', 2), 't_min must be < t_max, got t_min=2.0, t_max=2.0'),
    (lambda: check_bounds('t_min', 0, 't_max', 2), 't_min must be a finite number > 0, got 0'),
    (lambda: check_choice('reduction', 'avg', ('none', 'mean')),
     r"reduction must be one of \('none', 'mean'\), got 'avg'"),
])
def test_number_checks_name_the_problem(call, message):
    with pytest.raises(ValueError, match=f'^{message}$'):
        call()


def test_check_labels():
    labels = torch.tensor([[0, 2], [255, 1]])
    check_labels('labels', labels, 3, ignore_index=255, shape=(2, 2))
    check_labels('labels', torch.zeros(0, dtype=torch.long), 3)  # empty: nothing to check
    with pytest.raises(ValueError, match=r'^labels contain values \[255\] outside \[0, 3\) that are not '
                                         r'ignore_index=None$'):
        check_labels('labels', labels, 3)
    bad = torch.tensor([-1, 3, 7, 3, 0], dtype=torch.int32)
    with pytest.raises(ValueError, match=r'^img: labels contain values \[-1, 3, 7\] outside \[0, 3\)'):
        check_labels('img: labels', bad, 3, ignore_index=255)
    many = torch.arange(10, 40)
    with pytest.raises(ValueError, match=r'\[10, 11, .*, 29\] \(and 10 more\)'):
        check_labels('labels', many, 3)
    with pytest.raises(ValueError, match='must be an integer tensor, got dtype torch.float32'):
        check_labels('labels', labels.float(), 3)
    with pytest.raises(ValueError, match='must be an integer tensor, got dtype torch.bool'):
        check_labels('labels', labels > 0, 3)
    with pytest.raises(ValueError, match='must be a torch.Tensor, got list'):
        check_labels('labels', [0, 1], 3)
    with pytest.raises(ValueError, match=r'labels of shape \(2, 2\) do not match the expected shape \(2, 3\)'):
        check_labels('labels', labels, 3, ignore_index=255, shape=(2, 3))


def test_check_logits():
    check_logits('logits', torch.zeros(2, 3, 4, 5), 3)
    check_logits('logits', torch.zeros(7, 3, dtype=torch.float16), 3)
    for bad, message in [
            ([0.0, 1.0], 'logits must be a torch.Tensor, got list'),
            (torch.zeros(2, 3, dtype=torch.long), 'logits must be a floating-point tensor of logits, got dtype '
                                                  'torch.int64'),
            (torch.zeros(3), r'logits must have shape \(N, K, H, W\) or \(P, K\), got \(3,\)'),
            (torch.zeros(2, 4, 1, 1), r'logits of shape \(2, 4, 1, 1\) has 4 classes along dimension 1, expected '
                                      r'num_classes=3'),
            (torch.tensor([[0.0, float('-inf'), float('nan')]]), r'logits contains 2 NaN or infinite value\(s\)')]:
        with pytest.raises(ValueError, match=f'^{message}'):
            check_logits('logits', bad, 3)


def test_check_binary_logits():
    for ok in (torch.zeros(2, 1, 3, 3), torch.zeros(2, 3, 3), torch.zeros(5, 1), torch.zeros(5)):
        check_binary_logits('z', ok)
    with pytest.raises(ValueError, match=r'^z of shape \(2, 2, 3, 3\) has 2 channels along dimension 1'):
        check_binary_logits('z', torch.zeros(2, 2, 3, 3))
    with pytest.raises(ValueError, match='got a scalar'):
        check_binary_logits('z', torch.tensor(0.5))
    with pytest.raises(ValueError, match=r'^z contains 1 NaN or infinite value\(s\); .*torch.logit'):
        check_binary_logits('z', torch.logit(torch.tensor([0.5, 1.0])))
