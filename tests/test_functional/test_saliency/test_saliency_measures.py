"""Saliency measures against hand-computed values and naive references written from the papers.

``pysodmetrics`` cannot be installed beside the project's pins (it requires numpy<2), so the oracles
here are straightforward per-pixel / per-threshold numpy loops of the papers' formulas.
"""
import math

import numpy as np
import pytest
import torch

from calibseg.functional.saliency import (
    emeasure_curve,
    fmeasure_curve,
    mae,
    saliency_record,
    smeasure,
    summarize_saliency,
)

MATLAB_EPS = np.finfo(np.float64).eps


# ----------------------------------------------------------------------------------------- naive references
def naive_binary_maps(pred):
    """The 256 binary maps: foreground iff 255 * p >= k (k = 0..255)."""
    return [(pred * 255.0) >= k for k in range(256)]


def naive_fmeasure(pred, gt, beta_sq=0.3):
    """Achanta et al. 2009: F = (1 + b2) P R / (b2 P + R) per threshold, 0 when P R = 0."""
    out = []
    for binary in naive_binary_maps(pred):
        tp = np.sum(binary & gt)
        precision = tp / binary.sum() if binary.sum() else 0.0
        recall = tp / gt.sum() if gt.sum() else 0.0
        num = (1 + beta_sq) * precision * recall
        out.append(num / (beta_sq * precision + recall) if num else 0.0)
    return np.array(out)


def naive_emeasure(pred, gt):
    """Fan et al. 2018: mean over pixels of (1 + align)^2 / 4, align from the bias matrices."""
    g = gt.astype(float)
    out = []
    for binary in naive_binary_maps(pred):
        b = binary.astype(float)
        if g.sum() == 0:
            enhanced = 1.0 - b
        elif g.sum() == g.size:
            enhanced = b
        else:
            phi_b, phi_g = b - b.mean(), g - g.mean()
            align = 2 * phi_b * phi_g / (phi_b ** 2 + phi_g ** 2 + MATLAB_EPS)
            enhanced = (align + 1) ** 2 / 4
        out.append(enhanced.sum() / g.size)
    return np.array(out)


def naive_smeasure(pred, gt, alpha=0.5):
    """Fan et al. 2017, written pixel by pixel after the paper and the authors' MATLAB code."""
    g = gt.astype(float)
    h, w = g.shape
    mu = g.mean()
    if mu == 0:
        return 1 - pred.mean()
    if mu == 1:
        return pred.mean()

    def obj(values):
        m = values.mean()
        s = values.std(ddof=1) if values.size > 1 else 0.0
        return 2 * m / (m * m + 1 + s + MATLAB_EPS)

    s_object = mu * obj(pred[gt]) + (1 - mu) * obj(1 - pred[~gt])
    # centroid, 1-based, MATLAB round (half away from zero)
    total = g.sum()
    cx = sum(g[i, j] * (j + 1) for i in range(h) for j in range(w)) / total
    cy = sum(g[i, j] * (i + 1) for i in range(h) for j in range(w)) / total
    x, y = int(math.floor(cx + 0.5)), int(math.floor(cy + 0.5))

    def ssim(p, q):
        n = p.size
        mp, mq = p.mean(), q.mean()
        vp = ((p - mp) ** 2).sum() / (n - 1 + MATLAB_EPS)
        vq = ((q - mq) ** 2).sum() / (n - 1 + MATLAB_EPS)
        cov = ((p - mp) * (q - mq)).sum() / (n - 1 + MATLAB_EPS)
        a = 4 * mp * mq * cov
        b = (mp ** 2 + mq ** 2) * (vp + vq)
        return a / (b + MATLAB_EPS) if a != 0 else (1.0 if b == 0 else 0.0)

    s_region = 0.0
    for rows, cols in (((0, y), (0, x)), ((0, y), (x, w)), ((y, h), (0, x)), ((y, h), (x, w))):
        block = (slice(*rows), slice(*cols))
        if pred[block].size:
            s_region += pred[block].size / (h * w) * ssim(pred[block], g[block])
    return max(0.0, alpha * s_object + (1 - alpha) * s_region)


def _random_pair(seed, h=9, w=11):
    rng = np.random.default_rng(seed)
    gt = np.zeros((h, w), dtype=bool)
    gt[2:7, 3:9] = True
    gt[rng.random((h, w)) < 0.1] ^= True
    # probabilities off the k/255 grid so that float rounding cannot move a pixel across a threshold
    pred = np.clip(0.6 * gt + 0.5 * rng.random((h, w)) - 0.05, 0, 1)
    pred = (np.minimum(np.floor(pred * 255), 254) + 0.5) / 255
    return pred, gt


# ----------------------------------------------------------------------------------------- hand-made values
def test_hand_computed_fmeasure_and_emeasure():
    gt = torch.tensor([[1, 0], [0, 0]])
    pred = torch.tensor([[0.9, 0.6], [0.2, 0.0]], dtype=torch.float64)  # levels 229, 153, 51, 0
    f = fmeasure_curve(pred, gt)
    f_all, f_three, f_two = 1.3 * 0.25 / (0.075 + 1), 1.3 / 3 / (0.1 + 1), 1.3 * 0.5 / (0.15 + 1)
    assert f[0].item() == pytest.approx(f_all)
    assert torch.allclose(f[1:52], torch.tensor(f_three, dtype=torch.float64))
    assert torch.allclose(f[52:154], torch.tensor(f_two, dtype=torch.float64))
    assert torch.equal(f[154:230], torch.ones(76, dtype=torch.float64))
    assert torch.equal(f[230:], torch.zeros(26, dtype=torch.float64))
    record = saliency_record(pred, gt)
    summary = summarize_saliency([record])
    assert summary['maxF'] == 1.0
    assert summary['meanF'] == pytest.approx((f_all + 51 * f_three + 102 * f_two + 76) / 256)
    # E-measure at a threshold where B = [[1, 1], [0, 0]]: align = 12/13, -0.8, 0.8, 0.8
    e = emeasure_curve(pred, gt)
    enhanced = [(1 + 12 / 13) ** 2 / 4, (1 - 0.8) ** 2 / 4, (1 + 0.8) ** 2 / 4, (1 + 0.8) ** 2 / 4]
    assert e[100].item() == pytest.approx(sum(enhanced) / 4)
    assert e[200].item() == pytest.approx(1.0)  # B == G
    assert record['mae'].item() == pytest.approx((0.1 + 0.6 + 0.2 + 0.0) / 4)


def test_perfect_prediction():
    gt = torch.zeros(8, 10, dtype=torch.long)
    gt[2:6, 3:8] = 1
    pred = gt.double()
    summary = summarize_saliency([saliency_record(pred, gt)])
    assert summary['MAE'] == 0.0
    assert summary['maxF'] == 1.0
    assert summary['maxEm'] == pytest.approx(1.0, abs=1e-12)
    assert summary['Sm'] == pytest.approx(1.0, abs=1e-12)
    # thresholds 1..255 all reproduce the map; threshold 0 marks everything foreground
    assert torch.allclose(fmeasure_curve(pred, gt)[1:], torch.ones(255, dtype=torch.float64))
    assert summary['meanF'] == pytest.approx((255 + fmeasure_curve(pred, gt)[0].item()) / 256)


def test_smeasure_hand_values():
    gt = torch.zeros(4, 4, dtype=torch.long)
    gt[:, :2] = 1  # centroid (X, Y) = (round(1.5), round(2.5)) = (2, 3): every block is pure
    half = torch.full((4, 4), 0.5, dtype=torch.float64)
    # object: 2 * 0.5 / (0.25 + 1) = 0.8 on both sides; region: pure blocks with constant maps score 1
    assert smeasure(half, gt).item() == pytest.approx(0.5 * 0.8 + 0.5 * 1.0)
    empty = torch.zeros(4, 4, dtype=torch.long)
    pred = torch.rand(4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert smeasure(pred, empty).item() == pytest.approx(1 - pred.mean().item())
    assert smeasure(pred, torch.ones(4, 4, dtype=torch.long)).item() == pytest.approx(pred.mean().item())
    # an empty ground truth: E-measure counts the pixels predicted background
    e = emeasure_curve(pred, empty)
    levels = torch.floor(pred * 255)
    assert e[128].item() == pytest.approx((levels < 128).double().mean().item())


# ----------------------------------------------------------------------------------------- naive references
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_against_naive_references(seed):
    pred, gt = _random_pair(seed)
    tp, tg = torch.from_numpy(pred), torch.from_numpy(gt)
    assert mae(tp, tg).item() == pytest.approx(np.abs(pred - gt).mean(), abs=1e-15)
    np.testing.assert_allclose(fmeasure_curve(tp, tg).numpy(), naive_fmeasure(pred, gt), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(emeasure_curve(tp, tg).numpy(), naive_emeasure(pred, gt), rtol=1e-12, atol=1e-15)
    assert smeasure(tp, tg).item() == pytest.approx(naive_smeasure(pred, gt), rel=1e-12, abs=1e-15)


def test_smeasure_edge_centroids_against_naive():
    """Foreground in the last column / row: the right and bottom blocks are empty (zero weight)."""
    pred = np.random.default_rng(3).random((5, 6))
    last_column = np.zeros((5, 6), bool)
    last_column[:, -1] = True
    corner = np.zeros((5, 6), bool)
    corner[-1, -1] = True
    for gt in (last_column, corner, np.eye(5, 6, dtype=bool)):
        value = smeasure(torch.from_numpy(pred), torch.from_numpy(gt)).item()
        assert math.isfinite(value) and value == pytest.approx(naive_smeasure(pred, gt), rel=1e-12)


def test_summary_averages_curves_before_taking_the_max():
    pred_a, gt_a = _random_pair(0)
    pred_b, gt_b = _random_pair(1)
    records = [saliency_record(torch.from_numpy(p), torch.from_numpy(g)) for p, g in ((pred_a, gt_a), (pred_b, gt_b))]
    summary = summarize_saliency(records)
    curve_f = (naive_fmeasure(pred_a, gt_a) + naive_fmeasure(pred_b, gt_b)) / 2
    curve_e = (naive_emeasure(pred_a, gt_a) + naive_emeasure(pred_b, gt_b)) / 2
    assert summary['maxF'] == pytest.approx(curve_f.max(), rel=1e-12)
    assert summary['meanF'] == pytest.approx(curve_f.mean(), rel=1e-12)
    assert summary['maxEm'] == pytest.approx(curve_e.max(), rel=1e-12)
    assert summary['meanEm'] == pytest.approx(curve_e.mean(), rel=1e-12)
    assert summary['Sm'] == pytest.approx((naive_smeasure(pred_a, gt_a) + naive_smeasure(pred_b, gt_b)) / 2)
    assert summary['MAE'] == pytest.approx((np.abs(pred_a - gt_a).mean() + np.abs(pred_b - gt_b).mean()) / 2)
    assert list(summary) == ['MAE', 'maxF', 'meanF', 'Sm', 'meanEm', 'maxEm']


def test_minmax_normalize_is_opt_in():
    pred, gt = _random_pair(4)
    squeezed = torch.from_numpy(0.2 + 0.5 * pred)
    raw = saliency_record(squeezed, torch.from_numpy(gt))
    rescaled = saliency_record(squeezed, torch.from_numpy(gt), minmax_normalize=True)
    low, high = squeezed.min(), squeezed.max()
    direct = saliency_record((squeezed - low) / (high - low), torch.from_numpy(gt))
    assert raw['mae'] != rescaled['mae']
    for key in ('mae', 'sm', 'f_curve', 'e_curve'):
        torch.testing.assert_close(rescaled[key], direct[key])


def test_invalid_inputs_raise():
    pred = torch.rand(4, 4, dtype=torch.float64)
    gt = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r'gt must hold 0 \(background\) and 1.*\[255\]'):
        mae(pred, gt.masked_fill(torch.eye(4, dtype=torch.bool), 255))
    with pytest.raises(ValueError, match=r'probabilities in \[0, 1\]'):
        fmeasure_curve(pred + 1, gt)
    with pytest.raises(ValueError, match='non-finite'):
        smeasure(pred.masked_fill(torch.eye(4, dtype=torch.bool), float('nan')), gt)
    with pytest.raises(ValueError, match='same shape'):
        emeasure_curve(pred, gt[:3])
    with pytest.raises(ValueError, match='beta_sq'):
        fmeasure_curve(pred, gt, beta_sq=0.0)
    with pytest.raises(ValueError, match='alpha'):
        smeasure(pred, gt, alpha=1.5)
    with pytest.raises(ValueError, match='empty'):
        summarize_saliency([])
