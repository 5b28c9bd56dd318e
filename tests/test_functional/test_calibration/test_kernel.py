import math

import numpy as np
import pytest
import torch

from calibseg.functional.calibration import (
    CalibrationStatistics,
    calibration_metrics,
    kde_bandwidth,
    kdece,
    mmce,
    sece_from_cells,
    smece,
    smooth_ece,
)
from calibseg.functional.calibration.kernel import (
    KDE_NODES,
    KDE_RANGE,
    cell_points,
    kdece_bound,
    kdece_gaussian,
    kdece_points,
    triweight_weights,
)

# grid error of the Gaussian kernel estimators (cells replace pixels; node grid): observed <= 2e-6, tested at 5e-5
TOL = 5e-5


@pytest.fixture(scope='module', params=[(2000, 5, 0, 0.05), (1500, 8, 1, 0.0), (1000, 3, 2, 0.3)],
                ids=['sat5', 'sat0', 'sat30'])
def case(request, oracle):
    n, k, seed, sat = request.param
    x, y = oracle.make_logits(n, k, seed, saturate=sat)
    p32 = torch.softmax(x, 1)
    s = CalibrationStatistics(k, input_type='probs', classwise=False).update(p32, y)
    conf, cor = oracle.top_label(p32.double().numpy(), y.numpy())
    return s, conf, cor


def test_kdece_gaussian_variant(case, oracle):
    s, conf, cor = case
    assert kdece_gaussian(s) == pytest.approx(oracle.kdece_gaussian(conf, cor), abs=TOL)


def test_kdece_bandwidth_is_the_reference_rule(case):
    s, conf, cor = case
    want = np.std(conf[cor == 1]) * (2 * len(conf)) ** -0.2  # correct pixels only, N counts all pixels
    assert kde_bandwidth(s) == pytest.approx(want, rel=1e-9)


def test_kdece_points_match_the_reference_reading(case, oracle):
    # exact data (pixels, no grid): Zhang et al.'s estimator to 1e-6 relative
    _, conf, cor = case
    got = kdece_points(torch.from_numpy(conf), torch.ones(len(conf), dtype=torch.float64), torch.from_numpy(cor))
    want = oracle.kdece(conf, cor)
    assert got == pytest.approx(want, rel=1e-6)
    assert kdece_points(torch.from_numpy(conf), torch.ones(len(conf), dtype=torch.float64), torch.from_numpy(cor),
                        bandwidth=0.03) == pytest.approx(oracle.kdece(conf, cor, bandwidth=0.03), rel=1e-6)


@pytest.mark.parametrize('seed', [0, 1])
def test_kdece_exact_cells_match_the_reference_reading(oracle, seed):
    # one confidence value per fine cell (several pixels each): the statistics are exact, so is KDECE
    rng = np.random.default_rng(seed)
    cells = rng.choice(np.arange(1600, 2999), size=300, replace=False)
    values = (cells + 0.5) / 3000.0
    conf = np.repeat(values, rng.integers(1, 6, size=len(values)))
    cor = (rng.random(len(conf)) < conf ** 2).astype(np.float64)
    p = torch.from_numpy(np.stack([conf, 1.0 - conf], 1))
    s = CalibrationStatistics(2, input_type='probs', classwise=False).update(p, torch.from_numpy(1 - cor).long())
    want = oracle.kdece(conf, cor)
    assert kdece(s) == pytest.approx(want, rel=1e-6)
    assert abs(kdece(s) - want) <= kdece_bound(s)


def test_kdece_streamed_within_its_bound(case, oracle):
    s, conf, cor = case
    want = oracle.kdece(conf, cor)
    got, bound = kdece(s), kdece_bound(s)
    assert abs(got - want) <= bound
    assert abs(got - want) <= 1e-3 * want  # the bound is a worst case; real data lie far inside it


@pytest.mark.parametrize('n_cells', [40, 400])
def test_kdece_bound_holds_on_adversarial_cells(oracle, n_cells):
    # inside every cell the correct pixels sit at its low end and the wrong ones at its high end: the cell mean
    # misplaces the correct pixels by almost a cell width, the worst case the bound is built for
    rng = np.random.default_rng(n_cells)
    cells = rng.choice(np.arange(1700, 2990), size=n_cells, replace=False)
    lo, hi = cells / 3000.0 + 1e-7, (cells + 1) / 3000.0 - 1e-7
    n_right, n_wrong = rng.integers(1, 8, n_cells), rng.integers(1, 4, n_cells)
    conf = np.concatenate([np.repeat(lo, n_right), np.repeat(hi, n_wrong)])
    cor = np.concatenate([np.ones(n_right.sum()), np.zeros(n_wrong.sum())])
    p = torch.from_numpy(np.stack([conf, 1.0 - conf], 1))
    s = CalibrationStatistics(2, input_type='probs', classwise=False).update(p, torch.from_numpy(1 - cor).long())
    want = oracle.kdece(conf, cor)
    assert abs(kdece(s) - want) <= kdece_bound(s)
    assert kdece_points(torch.from_numpy(conf), torch.ones(len(conf), dtype=torch.float64),
                        torch.from_numpy(cor)) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize('h', [1e-4, 0.004, 0.03, 0.12])
def test_kdece_densities_match_kdepy(h):
    # peer library (test-only): the reference code's densities are KDEpy's FFTKDE(bw=h, kernel='triweight') of the
    # mirrored data evaluated on the 2^14 nodes; calibseg's linear binning + convolution must give the same
    from KDEpy import FFTKDE

    from calibseg.functional.calibration.kernel import _convolve_same, _linear_binning, _mirror, kde_nodes

    conf = np.random.default_rng(7).uniform(0.2, 1.0, 300)
    conf[:20] = 1.0  # float32 saturation: the image of 1.0 is 1.0
    data = np.concatenate([conf, np.where(conf < 0.5, -conf, 2.0 - conf)])
    t = kde_nodes().numpy()
    want = FFTKDE(bw=h, kernel='triweight').fit(data).evaluate(t)
    spacing = (KDE_RANGE[1] - KDE_RANGE[0]) / (KDE_NODES - 1)
    x, ones = torch.from_numpy(conf), torch.ones(1, len(conf), dtype=torch.float64)
    binned = _linear_binning(x, ones, KDE_RANGE[0], spacing) + _linear_binning(_mirror(x), ones, KDE_RANGE[0], spacing)
    got = _convolve_same(binned, triweight_weights(h, spacing))[0].numpy() / len(data)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9 * want.max())


def test_triweight_kernel_is_a_density_of_std_h():
    spacing = (KDE_RANGE[1] - KDE_RANGE[0]) / (KDE_NODES - 1)
    for h in (0.003, 0.02, 0.1):
        w = triweight_weights(h, spacing).numpy()
        d = (np.arange(len(w)) - (len(w) - 1) // 2) * spacing
        assert w.sum() * spacing == pytest.approx(1.0, rel=1e-4)
        assert np.sqrt((w * d * d).sum() * spacing) == pytest.approx(h, rel=1e-3)
        assert (np.abs(d) <= 3 * h).all() and w.min() >= 0.0  # support |d| < 3h


def test_kdece_undefined_cases_are_nan():
    # no correct pixel, or every correct pixel at one confidence: the reference bandwidth is 0 or undefined
    p = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.7, 0.3]]).double()
    none_right = CalibrationStatistics(2, input_type='probs', classwise=False).update(p, torch.ones(3).long())
    assert math.isnan(kdece(none_right)) and math.isnan(kde_bandwidth(none_right))
    one_value = CalibrationStatistics(2, input_type='probs', classwise=False).update(p, torch.tensor([0, 1, 1]))
    assert kde_bandwidth(one_value) == 0.0 and math.isnan(kdece(one_value))
    assert math.isnan(calibration_metrics(one_value, metrics=['KDECE'])['KDECE'])
    assert math.isfinite(kdece(one_value, bandwidth=0.05))


def test_mmce(case, oracle):
    s, conf, cor = case
    assert mmce(s) == pytest.approx(oracle.mmce(conf, cor), abs=TOL)
    assert mmce(s, width=0.05) == pytest.approx(oracle.mmce(conf, cor, width=0.05), abs=TOL)
    with pytest.raises(ValueError, match='width'):
        mmce(s, width=0.0)


def test_sece_from_statistics(case, oracle):
    s, conf, cor = case
    x, n, a, _ = cell_points(s)
    assert float(sece_from_cells(x, n, a)) == pytest.approx(oracle.sece(conf, cor), abs=TOL)
    assert float(sece_from_cells(x, n, a, bandwidth=0.1)) == pytest.approx(oracle.sece(conf, cor, 0.1), abs=TOL)


def test_smece_fixed_point(case, oracle):
    s, conf, cor = case
    value, sigma = smece(s, return_sigma=True)
    want, want_sigma = oracle.smece(conf, cor)
    assert sigma == want_sigma
    assert value == pytest.approx(want, abs=TOL)
    assert smooth_ece(s, 0.05) == pytest.approx(oracle.smooth_ece_sigma(conf, cor, 0.05), abs=TOL)
    assert abs(value - sigma) <= 2.0 ** -10 + 1e-3  # near the fixed point


@pytest.mark.parametrize('seed,k,temperature', [(0, 5, 1.6), (1, 10, 1.0), (4, 4, 1.2)])
def test_smece_matches_relplot(oracle, seed, k, temperature):
    import relplot
    x, y = oracle.make_logits(2000, k, seed, saturate=0.0, temperature=temperature)
    p32 = torch.softmax(x, 1)
    conf, cor = oracle.top_label(p32.double().numpy(), y.numpy())
    assert conf.max() < 0.9999  # relplot's discrete reflection loses half the mass at exactly 0 or 1
    s = CalibrationStatistics(k, input_type='probs', classwise=False).update(p32, y)
    ref, ref_sigma = relplot.smECE(conf, cor, return_width=True)
    value, sigma = smece(s, return_sigma=True)
    assert sigma == pytest.approx(ref_sigma, abs=2.0 ** -10 + 1e-12)
    assert value == pytest.approx(ref, abs=5e-4)


def test_perfectly_calibrated_limit():
    # correctness drawn with probability = confidence: every estimator near 0, far below a shifted model
    gen = torch.Generator().manual_seed(3)
    c = 0.5 + 0.5 * torch.rand(20000, generator=gen)
    correct = torch.rand(20000, generator=gen) < c
    p = torch.stack([c, 1 - c], 1)
    s = CalibrationStatistics(2, input_type='probs', classwise=False).update(p, (~correct).long())
    m = calibration_metrics(s, metrics=['KDECE', 'MMCE', 'smECE', 'SECE', 'ECE'])
    assert m['ECE'] < 2 and m['KDECE'] < 2 and m['smECE'] < 2 and m['SECE'] < 3 and m['MMCE'] < 1
    bad = CalibrationStatistics(2, input_type='probs', classwise=False).update(
        torch.stack([c, 1 - c], 1), (torch.rand(20000, generator=gen) < 0.4).long())
    mb = calibration_metrics(bad, metrics=['KDECE', 'MMCE', 'smECE', 'SECE', 'ECE'])
    assert all(mb[key] > 10 * max(m[key], 0.1) for key in ('ECE', 'KDECE', 'MMCE', 'smECE', 'SECE'))


def test_single_confidence_value():
    # every pixel at 0.8 with accuracy 0.5: kernel metrics reduce to |acc - conf| (up to the bandwidth floor)
    p = torch.tensor([[0.8, 0.2]]).repeat(1000, 1)
    y = (torch.arange(1000) % 2).long()
    s = CalibrationStatistics(2, input_type='probs', classwise=False).update(p, y)
    m = calibration_metrics(s, metrics=['ECE', 'KDECE', 'SECE', 'MMCE', 'KSCE'])
    for key in ('ECE', 'SECE', 'MMCE', 'KSCE'):
        assert m[key] == pytest.approx(30.0, abs=0.05), key
    assert math.isnan(m['KDECE'])  # Zhang et al.'s bandwidth is 0 here: undefined (see test_kdece_undefined_cases)
    assert 100 * kdece(s, bandwidth=0.01) == pytest.approx(30.0, abs=0.05)
    assert 100 * kdece_gaussian(s) == pytest.approx(30.0, abs=0.05)
    assert math.isfinite(smece(s))
