"""Boundary distance contract and per-band calibration statistics against naive per-pixel references."""
import math

import numpy as np
import pytest
import torch
from naive_reference import band_reference, naive_boundary, naive_distance

from calibseg.functional.calibration import (
    CalibrationStatistics,
    SpatialCalibrationStatistics,
    boundary_distance,
    boundary_pixels,
    calibration_metrics,
)

R2, R5, R8 = math.sqrt(2), math.sqrt(5), math.sqrt(8)
NAN = float('nan')


def test_distance_contract_hand_computed():
    labels = np.array([[0, 0, 0, 0, 0],
                       [0, 0, 0, 0, 0],
                       [0, 0, 0, 1, 1],
                       [0, 0, 255, 1, 1]])
    # boundary: next to the other label, or next to the ignored pixel (the image border does not count)
    want_edge = np.array([[0, 0, 0, 0, 0],
                          [0, 0, 0, 1, 1],
                          [0, 0, 1, 1, 1],
                          [0, 1, 0, 1, 0]], bool)
    assert (boundary_pixels(labels, 255) == want_edge).all()
    want = np.array([[R8, R5, R2, 1, 1],
                     [R5, R2, 1, 0, 0],
                     [R2, 1, 0, 0, 0],
                     [1, 0, NAN, 0, 1]])
    got = boundary_distance(torch.from_numpy(labels), 255)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    # exact at integer distances (what integer band edges compare against)
    assert got[0, 3] == 1.0 and got[1, 3] == 0.0


def test_maps_without_boundary_and_entirely_ignored():
    assert np.isinf(boundary_distance(np.zeros((3, 4), np.int64), 255)).all()
    assert np.isnan(boundary_distance(np.full((3, 4), 255), 255)).all()
    # one label plus an ignored pixel: its valid neighbours are boundary pixels
    d = boundary_distance(np.array([[0, 0, 0], [0, 0, 255]]), 255)
    np.testing.assert_allclose(d, [[R2, 1, 0], [1, 0, NAN]], rtol=1e-6, equal_nan=True)
    # without ignore_index every label counts
    assert boundary_distance(np.array([[0, 255]]), None).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_distance_against_brute_force(seed):
    gen = np.random.default_rng(seed)
    labels = np.kron(gen.integers(0, 3, (4, 5)), np.ones((3, 3), np.int64))[:11, :13]  # blocky regions
    labels[gen.random(labels.shape) < 0.05] = 255
    labels[7:, :4] = 255  # an ignored region
    np.testing.assert_array_equal(boundary_pixels(labels, 255), naive_boundary(labels, 255))
    np.testing.assert_allclose(boundary_distance(labels, 255), naive_distance(labels, 255), rtol=1e-6,
                               equal_nan=True)


def test_distance_rejects_bad_maps():
    with pytest.raises(ValueError, match='2-D'):
        boundary_distance(np.zeros((1, 3, 4), np.int64))
    with pytest.raises(ValueError, match='integers'):
        boundary_distance(np.zeros((3, 4)))


def _samples(seed=0, k=4, n=4, size=(9, 11), binary=False):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        blocks = torch.randint(0, 2 if binary else k, (3, 4), generator=gen)
        labels = blocks.repeat_interleave(3, 0).repeat_interleave(3, 1)[:size[0], :size[1]].contiguous()
        labels[torch.rand(size, generator=gen) < 0.08] = 255
        if i == 1:
            labels[:, :] = 1  # no boundary: every pixel at infinite distance
        if i == 2:
            labels[:, :] = 255  # entirely ignored
        if i == 3:
            labels[:4, :5] = 255  # an ignored region
        x = torch.randn((1 if binary else k,) + size, generator=gen) * 2.5
        out.append((x[0] if binary else x, labels))
    return out


@pytest.mark.parametrize('edges', [(1.0,), (0.0, 1.0, 2.0, 4.0), (0.5, 1.5)])
def test_band_statistics_against_naive_reference(edges):
    samples = _samples()
    stats = SpatialCalibrationStatistics(edges, num_classes=4, input_type='logits')
    for x, y in samples:
        stats.update(x, y)
    table = stats.band_table()
    want = band_reference(samples, edges)
    assert table['count'] == [w['count'] for w in want]
    assert table['lower'] == [None] + list(edges) and table['upper'] == list(edges) + [None]
    for key in ('ECE', 'accuracy', 'confidence'):
        for got, ref in zip(table[key], want):
            assert (got is None) == (ref[key] is None)
            if got is not None:
                assert got == pytest.approx(ref[key], rel=1e-7), key  # float32 softmax of other shapes
    assert table['count'][-1] >= 99 - 9  # the boundary-free map sits in the last band


def test_chunks_give_the_same_statistics():
    samples = _samples(seed=7)
    whole = SpatialCalibrationStatistics((1.0, 2.0), num_classes=4, input_type='logits')
    small = SpatialCalibrationStatistics((1.0, 2.0), num_classes=4, input_type='logits', chunk_size=7)
    for x, y in samples:
        whole.update(x, y)
        small.update(x, y)
    assert torch.equal(small.count, whole.count) and torch.equal(small.sum_correct, whole.sum_correct)
    assert torch.allclose(small.sum_conf, whole.sum_conf, rtol=1e-6)


def test_binary_maps_and_batched_inputs_match_the_reference():
    samples = _samples(seed=3, binary=True)
    probs = [(torch.sigmoid(x), y) for x, y in samples]
    stats = SpatialCalibrationStatistics((1.0, 3.0), num_classes=2, input_type='probs', binary=True)
    stats.update(torch.stack([p for p, _ in probs]).unsqueeze(1), torch.stack([y for _, y in probs]))
    want = band_reference(probs, (1.0, 3.0), binary=True, input_type='probs')
    table = stats.band_table()
    assert table['count'] == [w['count'] for w in want]
    for got, ref in zip(table['ECE'], want):
        assert got == pytest.approx(ref['ECE'], rel=1e-7)


def test_one_band_matches_the_pooled_statistics_and_collapse_and_merge():
    samples = [s for i, s in enumerate(_samples(seed=5)) if i != 1]  # every map has boundaries
    fine = SpatialCalibrationStatistics((1.0, 2.0, 1e6), num_classes=4, input_type='logits')
    halves = [SpatialCalibrationStatistics((1.0, 2.0, 1e6), num_classes=4, input_type='logits') for _ in range(2)]
    pooled = CalibrationStatistics(4, input_type='logits', classwise=False)
    for i, (x, y) in enumerate(samples):
        fine.update(x, y)
        halves[i % 2].update(x, y)
        pooled.update(x, y)
    one = fine.band_table([1e6])
    ref = calibration_metrics(pooled, metrics=['ECE', 'Acc'], bins=(15,))
    assert one['count'] == [pooled.num_pixels, 0]
    assert one['ECE'][0] == pytest.approx(ref['ECE_15'], rel=1e-6)  # float32 softmax of other column blocks
    assert one['accuracy'][0] == pytest.approx(ref['Acc'], rel=1e-12)
    merged = halves[0].copy().merge(halves[1])
    assert torch.equal(merged.to_tensor(), fine.to_tensor())
    assert torch.equal(fine.from_tensor(fine.to_tensor()).collapse([2.0]), fine.collapse([2.0]))
    assert fine.collapse([1.0, 2.0, 1e6]).sum() == fine.to_tensor().sum()
    with pytest.raises(ValueError, match='not among'):
        fine.collapse([1.5])


def test_exclude_background_keeps_label_zero_in_the_boundaries():
    labels = torch.tensor([[0, 0, 1, 1]])
    stats = SpatialCalibrationStatistics((0.0,), num_classes=2, input_type='logits', exclude_background=True)
    stats.update(torch.zeros(2, 1, 4), labels)
    assert stats.band_counts().tolist() == [1.0, 1.0]  # (0, 2) on the boundary, (0, 3) at distance 1


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match='increasing'):
        SpatialCalibrationStatistics((2.0, 1.0), num_classes=3, input_type='logits')
    with pytest.raises(ValueError, match='increasing'):
        SpatialCalibrationStatistics((), num_classes=3, input_type='logits')
    with pytest.raises(ValueError, match='input_type'):
        SpatialCalibrationStatistics((1.0,), num_classes=3, input_type='prob')
    stats = SpatialCalibrationStatistics((1.0,), num_classes=3, input_type='probs')
    with pytest.raises(ValueError, match='shape'):
        stats.update(torch.rand(2, 4, 4), torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        stats.update(torch.rand(3, 4, 4) * 2, torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='7'):
        stats.update(torch.rand(3, 2, 2), torch.tensor([[0, 7], [1, 2]]))
    assert stats.num_pixels == 0  # unchanged by the failed updates
