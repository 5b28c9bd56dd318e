"""Equal-mass grid-error bound: tie-aware (same-sign cells), rigorous against per-pixel splits in any tie order."""
import numpy as np
import pytest
import torch

from calibseg.functional.calibration import CalibrationStatistics, approximation_bounds, calibration_metrics
from calibseg.functional.calibration.binned import equal_mass_bound
from calibseg.functional.calibration.bounds import equal_mass_error_bound


def _mass_ece_any_order(conf, target, n_bins, rng):
    """Per-pixel equal-mass ECE with ties broken at random (numpy.array_split of the sorted pixels)."""
    order = np.lexsort((rng.random(len(conf)), conf))
    total = sum(abs(np.sum(target[g] - conf[g])) for g in np.array_split(order, n_bins))
    return total / len(conf)


def _class_mean_bound(stats, n_bins):
    return equal_mass_bound(stats.cw_count, n_bins).mean()


def _saturated(seed, n=3000, k=5, frac=0.6):
    """Segmentation-like logits: ``frac`` of the pixels saturate (float32 confidence exactly 1.0), 2% of them wrong."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen) * 2.0
    pred = logits.argmax(1)
    sat = torch.rand(n, generator=gen) < frac
    logits[sat, pred[sat]] += 80.0
    probs = torch.softmax(logits.double() / 1.5, 1)
    labels = torch.multinomial(probs, 1, generator=gen).squeeze(1)
    flip = sat & (torch.rand(n, generator=gen) < 0.02)
    labels[flip] = (pred[flip] + 1) % k
    labels[sat & ~flip] = pred[sat & ~flip]
    return logits, labels


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_saturated_cell_no_longer_counts_as_moved(seed):
    x, y = _saturated(seed)
    s = CalibrationStatistics(5, input_type='logits').update(x, y)
    p = torch.softmax(x, 1).double().numpy()
    conf, pred = p.max(1), p.argmax(1)
    cor = (pred == y.numpy()).astype(np.float64)
    assert (conf == 1.0).mean() > 0.5
    bounds = approximation_bounds(s)
    m = calibration_metrics(s, metrics=['ECE_em', 'cwCE_em'])
    rng = np.random.default_rng(seed)
    for b in (5, 15, 50):
        old = 100 * float(equal_mass_bound(s.count, b))
        assert old > 50.0  # what the 2m/N bound reported (issue 15)
        assert bounds[f'ECE_em_{b}'] < 1.0
        for _ in range(5):  # whatever order the tied pixels take
            exact = 100 * _mass_ece_any_order(conf, cor, b, rng)
            assert abs(m[f'ECE_em_{b}'] - exact) <= bounds[f'ECE_em_{b}'] + 1e-9
        # class-wise: exact zeros (saturated pixels) form huge single-valued cells too
        want = np.mean([100 * _mass_ece_any_order(p[:, k], (y.numpy() == k).astype(np.float64), b, rng)
                        for k in range(5)])
        assert abs(m[f'cwCE_em_{b}'] - want) <= bounds[f'cwCE_em_{b}'] + 1e-9
        old_cw = 100 * float(_class_mean_bound(s, b))
        assert old_cw > 50.0 and bounds[f'cwCE_em_{b}'] < min(2.0, old_cw / 40)


@pytest.mark.parametrize('seed', range(6))
def test_bound_is_rigorous_on_adversarial_cells(seed):
    # few distinct values, heavy ties, mixed correctness: the bound must hold for every tie order
    rng = np.random.default_rng(seed)
    values = np.array([0.55, 0.7, 0.7 + 1e-5, 0.9, 1.0])
    conf = rng.choice(values, size=200, p=[0.1, 0.25, 0.15, 0.2, 0.3])
    cor = (rng.random(200) < 0.7).astype(np.float64)
    probs = torch.from_numpy(np.stack([conf, 1.0 - conf], 1))
    s = CalibrationStatistics(2, input_type='probs', classwise=False).update(probs, torch.from_numpy(1 - cor).long())
    bounds = approximation_bounds(s, bins=[2, 3, 5, 10])
    m = calibration_metrics(s, metrics=['ECE_em'], bins=[2, 3, 5, 10])
    for b in (2, 3, 5, 10):
        worst = max(abs(m[f'ECE_em_{b}'] - 100 * _mass_ece_any_order(conf, cor, b, rng)) for _ in range(40))
        assert worst <= bounds[f'ECE_em_{b}'] + 1e-9, (b, worst, bounds[f'ECE_em_{b}'])


def test_hand_computed_bound():
    # 4 pixels at exactly 1.0 (1 wrong) and 2 at 0.6 (1 wrong), B = 2: array_split ranks [0, 3) and [3, 6)
    counts = torch.zeros(4, dtype=torch.float64)
    correct = torch.zeros(4, dtype=torch.float64)
    counts[1], correct[1] = 2, 1  # cell (0.5, 0.7]
    counts[3], correct[3] = 4, 3  # exact one
    lower = torch.tensor([0.0, 0.5, 0.7, 1.0], dtype=torch.float64)
    upper = torch.tensor([0.5, 0.7, 1.0, 1.0], dtype=torch.float64)
    single = torch.tensor([False, False, False, True])
    # the 1.0 cell (ranks 2..5, median 3.5 -> bin 1) moves rank 2 to bin 1: m = 1, rho = 1, U = 1 wrong pixel;
    # same sign, so also <= U of the other cells in bins 0..1: the 0.6 cell, U = 1 * (1 - 0.5) + 1 * 0.7 = 1.2
    got = equal_mass_error_bound(counts, correct, lower, upper, single, 2)
    assert float(got) == pytest.approx(2 * 1.0 / 6)
    # the old rule gives the same here (2m/N), and never less
    assert float(got) <= float(equal_mass_bound(counts, 2)) + 1e-12


def test_kdece_bound_is_reported():
    from calibseg.functional.calibration import kdece_bound
    x, y = _saturated(4, n=800)
    s = CalibrationStatistics(5, input_type='logits').update(x, y)
    assert approximation_bounds(s)['KDECE'] == pytest.approx(100 * kdece_bound(s))
