import numpy as np
import pytest
import torch

from calibseg.functional.calibration import CalibrationStatistics, aurc, auroc, ks_error
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
