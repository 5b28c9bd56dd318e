import numpy as np
import pytest
import torch

from calibseg.functional.calibration import (
    DEFAULT_BINS,
    CalibrationStatistics,
    approximation_bounds,
    calibration_metrics,
    classwise_table,
    equal_mass_bins,
    reliability_bins,
)

CASES = [(2000, 5, 0, 0.05), (3000, 10, 1, 0.0), (1200, 3, 2, 0.3)]


@pytest.fixture(scope='module', params=CASES, ids=lambda c: f'N{c[0]}K{c[1]}sat{c[3]}')
def case(request, oracle):
    n, k, seed, sat = request.param
    x, y = oracle.make_logits(n, k, seed, saturate=sat)
    p32 = torch.softmax(x, 1)
    stats = CalibrationStatistics(k, input_type='probs').update(p32, y)
    p = p32.double().numpy()
    return stats, p, y.numpy(), calibration_metrics(stats), approximation_bounds(stats)


def test_equal_width_keys_are_exact(case, oracle):
    stats, p, y, m, _ = case
    conf, cor = oracle.top_label(p, y)
    for b in DEFAULT_BINS:
        want = oracle.width_errors(conf, cor, b)
        assert m[f'ECE_{b}'] == pytest.approx(100 * want['ECE'], rel=1e-10, abs=1e-10)
        assert m[f'MCE_{b}'] == pytest.approx(100 * want['MCE'], rel=1e-10, abs=1e-10)
        assert m[f'cwCE_{b}'] == pytest.approx(100 * oracle.cw_width(p, y, b), rel=1e-10, abs=1e-10)
    want = oracle.width_errors(conf, cor, 15)
    assert m['ECE'] == m['ECE_15']
    for key in ('RMSCE', 'dECE', 'OE', 'UE'):
        assert m[f'{key}_15'] == pytest.approx(100 * want[key], rel=1e-10, abs=1e-10), key


def test_equal_mass_keys_within_documented_bound(case, oracle):
    stats, p, y, m, bound = case
    conf, cor = oracle.top_label(p, y)
    for b in DEFAULT_BINS:
        exact = 100 * oracle.mass_ece(conf, cor, b)
        assert abs(m[f'ECE_em_{b}'] - exact) <= bound[f'ECE_em_{b}'] + 1e-9, b
        exact_cw = 100 * oracle.cw_mass(p, y, b)
        assert abs(m[f'cwCE_em_{b}'] - exact_cw) <= bound[f'cwCE_em_{b}'] + 1e-9, b
    # without ties the cells straddling rank boundaries are the only approximation: small bins hold whole cells
    assert bound['ECE_em_15'] <= 100 * 2 * 15 * (stats.count.max().item() / 2) / stats.num_pixels + 1e-9


def test_equal_mass_exact_when_no_cell_straddles():
    # 4 distinct confidences, 25 pixels each: quantile edges fall between cells
    conf = torch.tensor([0.6, 0.7, 0.8, 0.9]).repeat_interleave(25)
    p = torch.stack([conf, 1 - conf], 1)
    y = (torch.arange(100) % 3 == 0).long()
    s = CalibrationStatistics(2, input_type='probs').update(p, y)
    bins, moved = equal_mass_bins(s.count, 4)
    assert moved.item() == 0
    assert bins[s.count > 0].tolist() == [0, 1, 2, 3]
    assert approximation_bounds(s, bins=[4, 2])['ECE_em_4'] == 0.0
    pred_correct = (y == 0).double()
    want = sum(abs(float((pred_correct[i:i + 25] - conf[i:i + 25].double()).sum())) for i in range(0, 100, 25))
    assert calibration_metrics(s, metrics=['ECE_em'], bins=[4])['ECE_em_4'] == pytest.approx(want)


def test_torchmetrics_oracle(oracle):
    import torchmetrics.classification as tm
    x, y = oracle.make_logits(3000, 6, seed=11, saturate=0.0)
    p = torch.softmax(x, 1)
    conf = p.max(1).values.double()
    # torchmetrics bins are [lower, upper) and sends 1.0 to a phantom bin: keep the data off every edge
    off = torch.ones_like(conf, dtype=torch.bool)
    for b in DEFAULT_BINS:
        frac = conf * b - torch.round(conf * b)
        off &= frac.abs() > 1e-5
    p, y = p[off], y[off]
    s = CalibrationStatistics(6, input_type='probs').update(p, y)
    m = calibration_metrics(s, metrics=['ECE', 'MCE', 'RMSCE'])
    for b in (5, 15, 100, 500):
        for norm, key in (('l1', f'ECE_{b}'), ('max', f'MCE_{b}')):
            ref = tm.MulticlassCalibrationError(num_classes=6, n_bins=b, norm=norm)(p, y).item()
            assert m[key] == pytest.approx(100 * ref, rel=1e-4, abs=1e-4), (b, norm)
    ref = tm.MulticlassCalibrationError(num_classes=6, n_bins=15, norm='l2')(p, y).item()
    assert m['RMSCE_15'] == pytest.approx(100 * ref, rel=1e-4)


def test_reliability_bins(case, oracle):
    stats, p, y, m, _ = case
    conf, cor = oracle.top_label(p, y)
    rb = reliability_bins(stats, 10)
    bins = oracle.width_bins(conf, 10)
    np.testing.assert_array_equal(rb['count'].numpy(), np.bincount(bins, minlength=10))
    nz = rb['count'] > 0
    counts = np.bincount(bins, minlength=10)[nz.numpy()]
    np.testing.assert_allclose(rb['confidence'][nz].numpy(), np.bincount(bins, conf, 10)[nz.numpy()] / counts)
    np.testing.assert_allclose(rb['accuracy'][nz].numpy(), np.bincount(bins, cor, 10)[nz.numpy()] / counts)
    assert torch.isnan(rb['confidence'][~nz]).all()
    np.testing.assert_allclose(rb['upper'].numpy(), np.arange(1, 11) / 10)
    ece = float((rb['count'][nz] * (rb['accuracy'][nz] - rb['confidence'][nz]).abs()).sum() / stats.num_pixels)
    assert 100 * ece == pytest.approx(m['ECE_10'])
    cw = reliability_bins(stats, 15, classwise=True)
    k = p.shape[1]
    assert cw['count'].shape == (k, 15)
    np.testing.assert_array_equal(cw['count'].sum(1).numpy(), np.full(k, len(y)))
    mass = reliability_bins(stats, 5, scheme='mass')
    assert mass['count'].sum() == len(y)
    finite = ~torch.isnan(mass['lower'])
    assert bool((mass['lower'][finite] <= mass['upper'][finite]).all())
    assert bool((mass['lower'][finite][1:] >= mass['upper'][finite][:-1] - 1e-12).all())  # ordered, disjoint
    with pytest.raises(ValueError, match='scheme'):
        reliability_bins(stats, 5, scheme='quantile')


def test_classwise_table(case, oracle):
    stats, p, y, m, _ = case
    table = classwise_table(stats)
    k = p.shape[1]
    assert table['class'] == list(range(k))
    assert table['pixels'] == np.bincount(y, minlength=k).tolist()
    for c in range(k):
        want = oracle.width_errors(p[:, c], (y == c).astype(float), 15)['ECE']
        assert table['ECE_15'][c] == pytest.approx(100 * want, rel=1e-10, abs=1e-10)
    assert np.mean(table['ECE_15']) == pytest.approx(m['cwCE_15'])
    assert all(table['in_average'])
