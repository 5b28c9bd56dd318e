import math

import pytest
import torch

from calibseg.functional.losses import fused
from calibseg.functional.losses.neighbourhood import (
    block_windows,
    label_neighbourhood,
    label_windows,
    neighbourhood_kernel,
    row_chunks,
)


def test_kernels_by_hand():
    edge, corner = math.exp(-0.5), math.exp(-1.0)
    gauss = torch.tensor([[corner, edge, corner], [edge, 1.0, edge], [corner, edge, corner]], dtype=torch.float64)
    torch.testing.assert_close(neighbourhood_kernel('gaussian', 3, 1.0), gauss / gauss.sum())
    svls = gauss.clone()
    svls[1, 1] = 4 * edge + 4 * corner
    torch.testing.assert_close(neighbourhood_kernel('svls', 3, 1.0), svls / svls.sum())
    assert neighbourhood_kernel('svls', 5, 2.0)[2, 2].item() == pytest.approx(0.5)
    torch.testing.assert_close(neighbourhood_kernel('mean', 5), torch.full((5, 5), 1 / 25, dtype=torch.float64))
    assert neighbourhood_kernel('mean', 1).item() == 1.0


@pytest.mark.parametrize('args, match', [(('svls', 1), 'kernel_size'), (('mean', 4), 'kernel_size'),
                                         (('mean', 3.0), 'kernel_size'), (('gaussian', 3, 0.0), 'sigma'),
                                         (('gaussian', 3, float('nan')), 'sigma'), (('box', 3), 'kernel')])
def test_bad_kernels(args, match):
    with pytest.raises(ValueError, match=match):
        neighbourhood_kernel(*args)


@pytest.mark.parametrize('kernel, size, sigma', [('mean', 3, 1.0), ('gaussian', 5, 0.8), ('svls', 3, 1.0),
                                                 ('svls', 5, 1.5), ('mean', 1, 1.0)])
@pytest.mark.parametrize('border', ['renormalise', 'replicate'])
def test_counts_match_a_direct_window_sum(kernel, size, sigma, border):
    # Independent reference: for every pixel, sum the 2-D kernel over its window by explicit loops.
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 5, 6), generator=gen)
    valid = torch.rand(2, 5, 6, generator=gen) > 0.3
    w = neighbourhood_kernel(kernel, size, sigma)
    half = size // 2
    counts = torch.zeros(2, 4, 5, 6, dtype=torch.float64)
    total = torch.zeros(2, 1, 5, 6, dtype=torch.float64)
    for n in range(2):
        for h in range(5):
            for x in range(6):
                for i in range(-half, half + 1):
                    for j in range(-half, half + 1):
                        hh, xx = h + i, x + j
                        if not (0 <= hh < 5 and 0 <= xx < 6):
                            if border == 'renormalise':
                                continue
                            hh, xx = min(max(hh, 0), 4), min(max(xx, 0), 5)
                        if valid[n, hh, xx]:
                            counts[n, target[n, hh, xx], h, x] += w[i + half, j + half]
                            total[n, 0, h, x] += w[i + half, j + half]
    hood = label_neighbourhood(target, valid, 4, kernel=kernel, kernel_size=size, sigma=sigma, border=border,
                               dtype=torch.float64)
    torch.testing.assert_close(hood.counts, counts)
    torch.testing.assert_close(hood.total, total)


def test_borders_and_ignored_neighbours_by_hand():
    # 2x2 labels, one ignored pixel; mean 3x3 kernel: every in-image pixel is every pixel's neighbour.
    target = torch.tensor([[[0, 1], [2, 255]]])
    valid = target != 255
    tau = label_neighbourhood(target, valid, 3, kernel='mean', kernel_size=3, dtype=torch.float64).proportions()
    for h, w in [(0, 0), (0, 1), (1, 0)]:
        torch.testing.assert_close(tau[0, :, h, w], torch.full((3,), 1 / 3, dtype=torch.float64))
    # replicate: pixel (0,0) sees (0,0) four times, (0,1) twice, (1,0) twice; (1,1) is ignored.
    tau = label_neighbourhood(target, valid, 3, kernel='mean', kernel_size=3, border='replicate',
                              dtype=torch.float64).proportions()
    torch.testing.assert_close(tau[0, :, 0, 0], torch.tensor([4 / 8, 2 / 8, 2 / 8], dtype=torch.float64))
    # An all-ignored map gives zero proportions, not NaN.
    hood = label_neighbourhood(target, torch.zeros_like(valid), 3, kernel='mean', kernel_size=3)
    assert torch.equal(hood.proportions(), torch.zeros(1, 3, 2, 2))


def test_bad_border():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match='border'):
        label_neighbourhood(target, target == 0, 1, kernel='mean', kernel_size=3, border='zeros')


@pytest.mark.parametrize('kernel, size, sigma', [('mean', 3, 1.0), ('gaussian', 5, 0.8), ('svls', 3, 1.0),
                                                 ('mean', 1, 1.0)])
@pytest.mark.parametrize('border', ['renormalise', 'replicate'])
def test_windows_rebuild_the_counts(kernel, size, sigma, border):
    # The losses' block-wise view (padded labels, validity, 1 / total, all offsets at once) gives the same
    # proportions as label_neighbourhood (checked above against explicit loops), block by block.
    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (2, 5, 6), generator=gen)
    valid = torch.rand(2, 5, 6, generator=gen) > 0.3
    valid[1] = False  # an all-ignored image: 1 / total is 0, not inf
    hood = label_neighbourhood(target, valid, 4, kernel=kernel, kernel_size=size, sigma=sigma, border=border,
                               dtype=torch.float64)
    windows = label_windows(target, valid, kernel=kernel, kernel_size=size, sigma=sigma, border=border,
                            dtype=torch.float64)
    expected_inv = torch.where(hood.total > 0, 1 / hood.safe_total(), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(windows.inv_total, expected_inv)
    tau = torch.zeros(2, 4, 5, 6, dtype=torch.float64)
    for images, rows in [(slice(0, 1), slice(0, 2)), (slice(0, 1), slice(2, 5)), (slice(1, 2), slice(0, 5))]:
        index, share = block_windows(windows, images, rows)
        assert index.shape == share.shape == (1, size * size, rows.stop - rows.start, 6)
        tau[images, :, rows].scatter_add_(1, index, share)
    torch.testing.assert_close(tau, hood.proportions())


@pytest.mark.parametrize('chunk', [10 ** 6, 4 * 5 * 6, 50, 1])
def test_row_chunks_cover_every_row_once(monkeypatch, chunk):
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', chunk)
    logits = torch.zeros(3, 4, 5, 6)
    seen = torch.zeros(3, 5, dtype=torch.long)
    for images, rows in row_chunks(logits):
        assert rows.start < rows.stop
        seen[images, rows] += 1
    assert torch.equal(seen, torch.ones_like(seen))
    assert len(list(row_chunks(torch.zeros(0, 4, 5, 6)))) == 0
