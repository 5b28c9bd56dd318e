import math

import pytest
import torch

from calibseg.functional.losses.neighbourhood import label_neighbourhood, neighbourhood_kernel


def test_kernels_by_hand():
    edge, corner = math.exp(-0.5), math.exp(-1.0)
    gauss = torch.tensor([[corner, edge, corner], [edge, 1.0, edge], [corner, edge, corner]])
    torch.testing.assert_close(neighbourhood_kernel('gaussian', 3, 1.0), (gauss / gauss.sum()).double())
    svls = gauss.clone()
    svls[1, 1] = 4 * edge + 4 * corner
    torch.testing.assert_close(neighbourhood_kernel('svls', 3, 1.0), (svls / svls.sum()).double())
    assert neighbourhood_kernel('svls', 5, 2.0)[2, 2].item() == pytest.approx(0.5)
    torch.testing.assert_close(neighbourhood_kernel('mean', 5), torch.full((5, 5), 1 / 25, dtype=torch.float64))
    assert neighbourhood_kernel('mean', 1).item() == 1.0


@pytest.mark.parametrize('args, match', [(('svls', 1), 'kernel_size'), (('mean', 4), 'kernel_size'),
                                         (('mean', 3.0), 'kernel_size'), (('gaussian', 3, 0.0), 'sigma'),
                                         (('gaussian', 3, float('nan')), 'sigma'), (('box', 3), 'kernel')])
def test_bad_kernels(args, match):
    with pytest.raises(ValueError, match=match):
        neighbourhood_kernel(*args)


def test_borders_and_ignored_neighbours_by_hand():
    # 2x2 labels, one ignored pixel; mean 3x3 kernel: every in-image pixel is every pixel's neighbour.
    target = torch.tensor([[[0, 1], [2, 255]]])
    valid = target != 255
    kernel = neighbourhood_kernel('mean', 3)
    tau = label_neighbourhood(target, valid, kernel).proportions(3)
    expected = torch.tensor([1 / 3, 1 / 3, 1 / 3], dtype=torch.float64)
    for h, w in [(0, 0), (0, 1), (1, 0)]:
        torch.testing.assert_close(tau[0, :, h, w], expected)
    # replicate: pixel (0,0) sees (0,0) four times, (0,1) twice, (1,0) twice; (1,1) is ignored.
    tau = label_neighbourhood(target, valid, kernel, border='replicate').proportions(3)
    torch.testing.assert_close(tau[0, :, 0, 0], torch.tensor([4 / 8, 2 / 8, 2 / 8], dtype=torch.float64))
    # An all-ignored map gives zero weights, not NaN.
    hood = label_neighbourhood(target, torch.zeros_like(valid), kernel)
    assert torch.equal(hood.weights, torch.zeros_like(hood.weights))


def test_bad_border():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match='border'):
        label_neighbourhood(target, target == 0, neighbourhood_kernel('mean', 3), border='zeros')
