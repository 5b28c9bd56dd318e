import numpy as np
import pytest
import torch
from naive_reference import naive_aupr_err, naive_fpr95

from calibseg.functional.calibration import (
    CalibrationStatistics,
    aupr_error,
    aurc,
    auroc,
    calibration_metrics,
    fpr_at_95,
    ks_error,
)
from calibseg.functional.calibration.ranking import ranking_bounds


@pytest.mark.parametrize('n,k,seed,sat', [(2000, 5, 0, 0.05), (3000, 8, 1, 0.0), (1500, 3, 2, 0.4)])
def test_against_per_pixel_within_bounds(oracle, n, k, seed, sat):
    x, y = oracle.make_logits(n, k, seed, saturate=sat)
    p32 = torch.softmax(x, 1)
    s = CalibrationStatistics(k, input_type='probs', classwise=False).update(p32, y)
    conf, cor = oracle.top_label(p32.double().numpy(), y.numpy())
    bound = ranking_bounds(s)
    assert abs(ks_error(s) - oracle.ks(conf, cor)) <= bound['KSCE'] + 1e-12
    assert ks_error(s) <= oracle.ks(conf, cor) + 1e-12  # cell ends are a subset of the thresholds
    assert abs(auroc(s) - oracle.auroc(conf, cor)) <= bound['AUROC'] + 1e-12
    assert abs(aurc(s) - oracle.aurc(conf, cor)) <= bound['AURC'] + 1e-12
    # the bounds are small compared with the values on continuous data
    assert bound['KSCE'] < 0.01 and bound['AUROC'] < 0.001 and bound['AURC'] < 0.001


def test_ties_in_single_valued_cells_are_exact(oracle):
    # only exact 1.0 and exact 0.5 confidences: both single-valued (1.0) or two-pixel-free... use probs
    p = torch.tensor([[1.0, 0.0]] * 30 + [[0.0, 1.0]] * 10 + [[0.75, 0.25]] * 20)
    y = torch.tensor([0] * 25 + [1] * 5 + [1] * 8 + [0] * 2 + [0] * 12 + [1] * 8)
    s = CalibrationStatistics(2, input_type='probs').update(p, y)
    conf, cor = oracle.top_label(p.double().numpy(), y.numpy())
    assert ks_error(s) == pytest.approx(oracle.ks(conf, cor), abs=1e-15)
    assert auroc(s) == pytest.approx(oracle.auroc(conf, cor), abs=1e-15)
    # AURC: the exact-one cell (40 pixels, 7 errors) is averaged over the orders of its tied pixels
    vals = []
    gen = np.random.default_rng(0)
    for _ in range(400):
        perm = gen.permutation(len(conf))
        vals.append(oracle.aurc(conf[perm], cor[perm]))
    assert aurc(s) == pytest.approx(np.mean(vals), abs=3 * np.std(vals) / 20 + 1e-6)
    assert min(vals) - 1e-12 <= aurc(s) <= max(vals) + 1e-12


def test_auroc_undefined_is_nan():
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    s = CalibrationStatistics(2, input_type='probs').update(p, torch.tensor([0, 1]))
    assert np.isnan(auroc(s)) and aurc(s) == 0.0 and ks_error(s) == pytest.approx(0.15)


# ------------------------------------------------------------------ failure detection: FPR95, AUPR_err
def test_naive_failure_references_on_a_hand_example():
    # 20 correct pixels at 0.99, 0.98, ..., 0.80 and 3 wrong ones; tau keeps 19 correct pixels
    conf = np.array([0.99 - 0.01 * i for i in range(20)] + [0.985, 0.805, 0.5])
    correct = np.array([1.0] * 20 + [0.0] * 3)
    # 19th most confident correct pixel: 0.99 - 0.18 = 0.81 -> wrong pixels >= 0.81: only 0.985
    assert naive_fpr95(conf, correct) == pytest.approx(1 / 3)
    # ascending confidence: 0.5 (wrong) P = 1/1; 0.805 (wrong) after one correct pixel (0.80) P = 2/3;
    # 0.985 (wrong) after 19 correct pixels P = 3/22
    assert naive_aupr_err(conf, correct) == pytest.approx((1 + 2 / 3 + 3 / 22) / 3)


@pytest.mark.parametrize('n,k,seed,sat', [(2000, 5, 0, 0.05), (3000, 8, 1, 0.0), (1500, 3, 2, 0.4)])
def test_failure_detection_against_per_pixel_within_bounds(oracle, n, k, seed, sat):
    x, y = oracle.make_logits(n, k, seed, saturate=sat)
    p32 = torch.softmax(x, 1)
    s = CalibrationStatistics(k, input_type='probs', classwise=False).update(p32, y)
    conf, cor = oracle.top_label(p32.double().numpy(), y.numpy())
    bound = ranking_bounds(s)
    assert abs(fpr_at_95(s) - naive_fpr95(conf, cor)) <= bound['FPR95'] + 1e-12
    assert abs(aupr_error(s) - naive_aupr_err(conf, cor)) <= bound['AUPR_err'] + 1e-12
    assert bound['FPR95'] < 0.01 and bound['AUPR_err'] < 0.01
    # the keys of the metric dictionary, in percent
    out = calibration_metrics(s, metrics=['FPR95', 'AUPR_err'])
    assert out == pytest.approx({'FPR95': 100 * fpr_at_95(s), 'AUPR_err': 100 * aupr_error(s)})


def test_failure_detection_is_exact_on_tied_cells():
    # tau falls in the exact-one cell (single-valued): 38 correct and 2 wrong pixels at c == 1.0
    p = torch.tensor([[1.0, 0.0]] * 40 + [[0.75, 0.25]] * 3)
    y = torch.tensor([0] * 38 + [1] * 2 + [0] * 1 + [1] * 2)
    s = CalibrationStatistics(2, input_type='probs').update(p, y)
    conf, cor = p.max(1).values.double().numpy(), (p.argmax(1) == y).double().numpy()
    assert fpr_at_95(s) == pytest.approx(naive_fpr95(conf, cor), abs=1e-15)
    assert fpr_at_95(s) == pytest.approx(2 / 4, abs=1e-15) and ranking_bounds(s)['FPR95'] == 0.0
    # every cell holds one distinct value (1.0, 0.75, 0.5): grouped ties give the per-pixel value exactly
    p = torch.tensor([[1.0, 0.0]] * 36 + [[0.75, 0.25]] * 10 + [[0.5, 0.5]] * 4)
    y = torch.tensor([0] * 30 + [1] * 6 + [0] * 4 + [1] * 6 + [0] * 2 + [1] * 2)
    s = CalibrationStatistics(2, input_type='probs').update(p, y)
    conf, cor = p.max(1).values.double().numpy(), (p.argmax(1) == y).double().numpy()
    assert aupr_error(s) == pytest.approx(naive_aupr_err(conf, cor), abs=1e-12)


def test_failure_detection_undefined_is_nan():
    p = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    s = CalibrationStatistics(2, input_type='probs').update(p, torch.tensor([0, 1]))
    assert np.isnan(fpr_at_95(s)) and np.isnan(aupr_error(s))
    s = CalibrationStatistics(2, input_type='probs').update(p, torch.tensor([1, 0]))
    assert np.isnan(fpr_at_95(s)) and np.isnan(aupr_error(s))
