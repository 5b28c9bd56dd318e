import numpy as np
import pytest
import torch
from naive_reference import naive_aupr_err, naive_fpr95

from calibseg.functional.calibration import (
    DEFAULT_BINS,
    METRIC_FAMILIES,
    BinaryCalibrationStatistics,
    CalibrationStatistics,
    approximation_bounds,
    calibration_metrics,
)


def expected_keys(head=15, classwise=True):
    keys = [f'ECE_{b}' for b in DEFAULT_BINS] + ['ECE'] + [f'ECE_em_{b}' for b in DEFAULT_BINS]
    if classwise:
        keys += [f'cwCE_{b}' for b in DEFAULT_BINS] + [f'cwCE_em_{b}' for b in DEFAULT_BINS]
    keys += [f'MCE_{b}' for b in DEFAULT_BINS] + ['RMSCE_15', 'dECE_15', f'OE_{head}', f'UE_{head}', 'KSCE',
                                                   'KDECE', 'MMCE', 'smECE', 'SECE', 'AUROC', 'AURC', 'FPR95',
                                                   'AUPR_err', 'NLL', 'Brier', 'Acc']
    return keys


def naive_all(oracle, p, y, lp, head=15, binary_brier=None):
    """Every key from per-pixel numpy oracles (percent, NLL/Brier raw)."""
    conf, cor = oracle.top_label(p, y)
    out = {}
    for b in DEFAULT_BINS:
        w = oracle.width_errors(conf, cor, b)
        out[f'ECE_{b}'], out[f'MCE_{b}'] = 100 * w['ECE'], 100 * w['MCE']
        out[f'ECE_em_{b}'] = 100 * oracle.mass_ece(conf, cor, b)
        out[f'cwCE_{b}'] = 100 * oracle.cw_width(p, y, b)
        out[f'cwCE_em_{b}'] = 100 * oracle.cw_mass(p, y, b)
    out['ECE'] = out[f'ECE_{head}']
    w15, wh = oracle.width_errors(conf, cor, 15), oracle.width_errors(conf, cor, head)
    out.update(RMSCE_15=100 * w15['RMSCE'], dECE_15=100 * w15['dECE'])
    out[f'OE_{head}'], out[f'UE_{head}'] = 100 * wh['OE'], 100 * wh['UE']
    out.update(KSCE=100 * oracle.ks(conf, cor), KDECE=100 * oracle.kdece(conf, cor),
               MMCE=100 * oracle.mmce(conf, cor), smECE=100 * oracle.smece(conf, cor)[0],
               SECE=100 * oracle.sece(conf, cor), AUROC=100 * oracle.auroc(conf, cor),
               AURC=100 * oracle.aurc(conf, cor), Acc=100 * cor.mean())
    out.update(FPR95=100 * naive_fpr95(conf, cor), AUPR_err=100 * naive_aupr_err(conf, cor))
    out['NLL'] = -lp[np.arange(len(y)), y].mean()
    onehot = np.eye(p.shape[1])[y]
    out['Brier'] = ((p - onehot) ** 2).sum(1).mean() if binary_brier is None else binary_brier
    return out


def compare(m, want, bounds):
    assert list(m) == list(want) or sorted(m) == sorted(want)
    for key, value in want.items():
        # grid approximation: documented bounds for the order-dependent keys, 5e-3 (percent) for kernels
        tol = bounds.get(key, 5e-3 if key in ('KDECE', 'MMCE', 'smECE', 'SECE') else 0.0)
        assert abs(m[key] - value) <= tol + 1e-6 * max(1.0, abs(value)), (key, m[key], value, tol)


def test_every_key_against_per_pixel_oracles(oracle):
    x, y = oracle.make_logits(1500, 6, seed=21, saturate=0.05)
    y[:40] = 255
    s = CalibrationStatistics(6, input_type='logits').update(x.view(3, 500, 6).permute(0, 2, 1), y.view(3, 500))
    keep = y != 255
    xv, yv = x[keep], y[keep].numpy()
    p = torch.softmax(xv, 1).double().numpy()
    lp = torch.log_softmax(xv.double(), 1).numpy()
    m = calibration_metrics(s)
    assert list(m) == expected_keys()
    compare(m, naive_all(oracle, p, yv, lp), approximation_bounds(s))


def test_binary_every_key(oracle):
    gen = torch.Generator().manual_seed(22)
    z = torch.randn(2, 1, 30, 30, generator=gen) * 2.5
    lab = (torch.rand(2, 30, 30, generator=gen) < torch.sigmoid(z[:, 0] / 1.7)).long()
    s = BinaryCalibrationStatistics(input_type='logits').update(z, lab)
    pf = torch.sigmoid(z.view(-1)).double().numpy()
    p = np.stack([1 - pf, pf], 1)
    y = lab.view(-1).numpy()
    lp = np.stack([-np.logaddexp(0, z.view(-1).double().numpy()), -np.logaddexp(0, -z.view(-1).double().numpy())], 1)
    m = calibration_metrics(s)
    assert list(m) == expected_keys(head=10)
    # float32 (1 - p) of the library vs float64 here: compare the classwise keys loosely
    want = naive_all(oracle, p, y, lp, head=10, binary_brier=((pf - y) ** 2).mean())
    bounds = approximation_bounds(s)
    for b in DEFAULT_BINS:
        bounds[f'cwCE_{b}'] = 1e-4
        bounds[f'cwCE_em_{b}'] = bounds[f'cwCE_em_{b}'] + 1e-4
    compare(m, want, bounds)


def test_families_select_keys():
    gen = torch.Generator().manual_seed(0)
    s = CalibrationStatistics(4, input_type='logits').update(torch.randn(200, 4, generator=gen),
                                                             torch.randint(0, 4, (200,), generator=gen))
    m = calibration_metrics(s, metrics=['ECE', 'MCE'])
    assert sorted(m) == sorted([f'ECE_{b}' for b in DEFAULT_BINS] + ['ECE'] + [f'MCE_{b}' for b in DEFAULT_BINS])
    assert list(calibration_metrics(s, metrics='NLL')) == ['NLL']
    m = calibration_metrics(s, metrics=['ECE', 'OE', 'RMSCE'], bins=[10, 30])
    assert sorted(m) == ['ECE', 'ECE_10', 'ECE_30', 'OE_15', 'RMSCE_15']
    full = calibration_metrics(s)
    for fam in METRIC_FAMILIES:  # each family computed alone gives the same numbers
        part = calibration_metrics(s, metrics=[fam])
        assert part and all(full[k] == part[k] for k in part)
    for key, value in full.items():  # units: percent except NLL and Brier
        if key not in ('NLL', 'Brier'):
            assert 0.0 <= value <= 100.0, key
    with pytest.raises(ValueError, match='unknown metric families'):
        calibration_metrics(s, metrics=['ECE', 'ACE'])
    with pytest.raises(ValueError, match='divisor of 3000'):
        calibration_metrics(s, bins=[7])
    top = CalibrationStatistics(4, input_type='logits', classwise=False)
    top.update(torch.randn(10, 4, generator=gen), torch.randint(0, 4, (10,), generator=gen))
    with pytest.raises(ValueError, match='classwise=True'):
        calibration_metrics(top, metrics=['cwCE'])
