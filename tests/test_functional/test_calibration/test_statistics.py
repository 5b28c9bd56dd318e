import numpy as np
import pytest
import torch

from calibseg.functional.calibration import (
    BinaryCalibrationStatistics,
    CalibrationStatistics,
    calibration_metrics,
)
from calibseg.functional.calibration import statistics as statistics_module


def close_state(a: CalibrationStatistics, b: CalibrationStatistics, rtol=1e-12):
    """Equal states; Σ_k p_k^2 of the Brier score is summed in float32 per pixel (order-dependent ~1e-7)."""
    ta, tb = a.to_tensor(), b.to_tensor()
    torch.testing.assert_close(ta[2], tb[2], rtol=max(rtol, 1e-6), atol=0)
    ta[2] = tb[2] = 0
    torch.testing.assert_close(ta, tb, rtol=rtol, atol=1e-9)


def test_scalars_and_histograms_match_naive(oracle):
    x, y = oracle.make_logits(3000, 6, seed=1)
    y[:50] = 255
    s = CalibrationStatistics(6, input_type='logits').update(x, y)
    keep = y != 255
    xv, yv = x[keep].double(), y[keep]
    p = oracle.probs_of(x[keep])  # float32 softmax as float64
    conf, cor = oracle.top_label(p, yv.numpy())
    lp = torch.log_softmax(xv, 1).numpy()
    n = keep.sum().item()
    sc = s.scalars
    assert sc['num_pixels'] == n == s.num_pixels
    assert sc['sum_correct'] == cor.sum()
    np.testing.assert_allclose(sc['sum_nll'], -lp[np.arange(n), yv.numpy()].sum(), rtol=1e-6)
    onehot = np.eye(6)[yv.numpy()]
    np.testing.assert_allclose(sc['sum_brier'], ((p - onehot) ** 2).sum(), rtol=1e-6)
    np.testing.assert_allclose(sc['sum_conf'], conf.sum(), rtol=1e-6)
    np.testing.assert_allclose(sc['sum_conf_sq'], (conf ** 2).sum(), rtol=1e-6)
    assert s.count.sum() == n and torch.equal(s.cw_count.sum(1), torch.full((6,), float(n), dtype=torch.float64))
    assert torch.equal(s.cw_sum_label.sum(1), torch.bincount(yv, minlength=6).double())
    np.testing.assert_allclose(s.cw_sum_prob.sum(1).numpy(), p.sum(0), rtol=1e-6)
    np.testing.assert_allclose(s.sum_correct.sum().item(), cor.sum())


def test_probs_input_is_exact(oracle):
    x, y = oracle.make_logits(2000, 4, seed=2)
    p32 = torch.softmax(x, 1)
    s = CalibrationStatistics(4, input_type='probs').update(p32, y)
    p = p32.double().numpy()
    conf, cor = oracle.top_label(p, y.numpy())
    grid = s.grid
    cells = grid.index(torch.from_numpy(conf))
    assert torch.equal(s.count, torch.bincount(cells, minlength=grid.n_cells).double())
    torch.testing.assert_close(s.sum_conf, torch.bincount(cells, torch.from_numpy(conf), minlength=grid.n_cells),
                               rtol=1e-13, atol=1e-12)
    assert torch.equal(s.sum_correct, torch.bincount(cells, torch.from_numpy(cor), minlength=grid.n_cells))
    lp = np.log(np.maximum(p[np.arange(len(y)), y.numpy()], np.finfo(np.float32).tiny))
    np.testing.assert_allclose(s.scalars['sum_nll'], -lp.sum(), rtol=1e-12)


def test_batches_merge_and_serialisation_equal_one_shot(oracle):
    x, y = oracle.make_logits(4000, 5, seed=3)
    p = torch.softmax(x, 1)  # probabilities: no chunk-alignment-dependent float32 softmax rounding
    one = CalibrationStatistics(5, input_type='probs', chunk_size=1000).update(p, y)
    batched = CalibrationStatistics(5, input_type='probs', chunk_size=1000)
    for start in range(0, 4000, 700):
        batched.update(p[start:start + 700], y[start:start + 700])
    close_state(one, batched)
    a = CalibrationStatistics(5, input_type='probs').update(p[:1500], y[:1500])
    b = CalibrationStatistics(5, input_type='probs').update(p[1500:], y[1500:])
    close_state(one, a + b)
    assert a.num_pixels == 1500  # __add__ does not modify its operands
    a += b
    close_state(one, a)
    back = one.from_tensor(one.to_tensor())
    assert torch.equal(back.to_tensor(), one.to_tensor()) and back.num_classes == 5
    restored = CalibrationStatistics(5, input_type='probs')
    restored.load_state_dict(one.state_dict())
    assert torch.equal(restored.to_tensor(), one.to_tensor())
    assert calibration_metrics(restored, metrics=['ECE']) == calibration_metrics(one, metrics=['ECE'])
    assert one.copy().reset().num_pixels == 0 and one.num_pixels == 4000
    # logits: torch's float32 softmax may differ by an ulp with the position of a pixel in a chunk
    lg = CalibrationStatistics(5, input_type='logits', chunk_size=1000).update(x, y)
    lb = CalibrationStatistics(5, input_type='logits')
    for start in range(0, 4000, 700):
        lb.update(x[start:start + 700], y[start:start + 700])
    close_state(lg, lb, rtol=1e-6)
    close_state(lg, one, rtol=1e-6)


def test_permutation_invariance(oracle):
    x, y = oracle.make_logits(3000, 5, seed=4)
    p = torch.softmax(x, 1)
    perm = torch.randperm(3000, generator=torch.Generator().manual_seed(0))
    a = CalibrationStatistics(5, input_type='probs').update(p, y)
    b = CalibrationStatistics(5, input_type='probs').update(p[perm], y[perm])
    close_state(a, b)
    ma, mb = calibration_metrics(a), calibration_metrics(b)
    for k in ma:
        assert ma[k] == pytest.approx(mb[k], rel=1e-9, abs=1e-9), k


def test_spatial_layouts_agree(oracle):
    x, y = oracle.make_logits(2 * 6 * 8, 4, seed=5)
    x = torch.softmax(x, 1)
    x4 = x.view(2, 6, 8, 4).permute(0, 3, 1, 2).contiguous()  # (N, K, H, W)
    y3 = y.view(2, 6, 8)
    flat = CalibrationStatistics(4, input_type='probs').update(x, y)
    nchw = CalibrationStatistics(4, input_type='probs', chunk_size=7).update(x4, y3)
    chw = CalibrationStatistics(4, input_type='probs').update(x4[0], y3[0]).update(x4[1], y3[1])
    close_state(flat, nchw)
    close_state(nchw, chw)
    strided = CalibrationStatistics(4, input_type='probs').update(x.view(2, 6, 8, 4).permute(0, 3, 1, 2), y3)
    close_state(flat, strided)


def test_ignored_pixels_have_no_effect(oracle):
    x, y = oracle.make_logits(1000, 3, seed=6)
    x = torch.softmax(x, 1)
    ref = CalibrationStatistics(3, input_type='probs').update(x, y)
    x2 = torch.cat([x, torch.full((200, 3), float('nan'))])  # garbage under ignored labels is never read
    y2 = torch.cat([y, torch.full((200,), 255)])
    s = CalibrationStatistics(3, input_type='probs').update(x2, y2)
    close_state(ref, s)
    s.update(x[:10], torch.full((10,), 255))  # all ignored: contributes nothing
    close_state(ref, s)
    none = CalibrationStatistics(3, input_type='probs', ignore_index=None).update(x, y)
    close_state(ref, none)
    lg = CalibrationStatistics(3, input_type='logits').update(torch.log(x2), y2)
    close_state(ref, lg, rtol=1e-5)


def test_exclude_background(oracle):
    x, y = oracle.make_logits(2000, 4, seed=7)
    x = torch.softmax(x, 1)
    s = CalibrationStatistics(4, input_type='probs', exclude_background=True).update(x, y)
    keep = y != 0
    ref = CalibrationStatistics(4, input_type='probs').update(x[keep], y[keep])
    torch.testing.assert_close(s.to_tensor(), ref.to_tensor())
    cw = calibration_metrics(s, metrics=['cwCE'])['cwCE_15']
    from calibseg.functional.calibration.binned import classwise_ece
    per = classwise_ece(s, 15)
    assert cw == pytest.approx(100 * float(per[1:].mean()), rel=1e-12)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_nll_of_vanishing_label_probability_from_logits(dtype):
    """p_y underflows float32 (0 or subnormal): the NLL comes from the logits, logsumexp(x) - x_y in float64."""
    x = torch.tensor([[200.0, 0.0, 0.0],  # p_y = e^-200 = 0 in float32
                      [0.0, -95.0, 0.0],  # p_y ~ e^-95.7, a float32 subnormal
                      [60.0, 60.0, -10.0],  # a tie at the top: c = 1/2, p_y = e^-70 / 2 (normal float32)
                      [3.0, -150.0, 3.0]]).to(dtype)
    y = torch.tensor([1, 1, 2, 1])
    reference = (torch.logsumexp(x.double(), 1) - x.double().gather(1, y[:, None]).squeeze(1)).sum().item()
    s = CalibrationStatistics(3, input_type='logits').update(x, y)
    np.testing.assert_allclose(s.scalars['sum_nll'], reference, rtol=1e-6)
    assert reference > 200 + 95 + 70 + 150


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_low_and_double_precision_inputs(oracle, dtype):
    x, y = oracle.make_logits(1500, 5, seed=8)
    xd = x.to(dtype)
    s = CalibrationStatistics(5, input_type='logits').update(xd, y)
    p = torch.softmax(xd, 1).double()
    conf, pred = p.max(1)
    assert s.num_pixels == 1500
    assert s.scalars['sum_correct'] == float((pred == y).sum())
    np.testing.assert_allclose(s.scalars['sum_conf'], conf.sum().item(), rtol=1e-9)
    nll = -torch.log_softmax(xd.double(), 1).gather(1, y[:, None]).sum().item()
    tol = 1e-6 if dtype == torch.float64 else 2e-2
    np.testing.assert_allclose(s.scalars['sum_nll'], nll, rtol=tol)
    m = calibration_metrics(s)
    assert all(np.isfinite(v) for k, v in m.items() if k != 'AUROC')
    sp = CalibrationStatistics(5, input_type='probs').update(torch.softmax(xd, 1), y)
    assert sp.num_pixels == 1500
    spatial = CalibrationStatistics(5, input_type='probs', chunk_size=100).update(
        torch.softmax(xd, 1).view(3, 500, 5).permute(0, 2, 1), y.view(3, 500))
    close_state(sp, spatial)


def test_toplabel_only_statistics_match(oracle):
    x, y = oracle.make_logits(2000, 5, seed=9)
    full = CalibrationStatistics(5, input_type='logits').update(x, y)
    top = CalibrationStatistics(5, input_type='logits', classwise=False).update(x, y)
    n = top.state_size
    torch.testing.assert_close(top.to_tensor(), full.to_tensor()[:n], rtol=1e-12, atol=0)
    keys = [k for k in calibration_metrics(full) if not k.startswith('cwCE')]
    mt = calibration_metrics(top)
    assert sorted(mt) == sorted(keys)
    with pytest.raises(ValueError, match='class-wise'):
        _ = top.cw_count
    with pytest.raises(ValueError, match='cannot merge'):
        full.merge(top)


def test_saturated_confidences_land_in_end_cells():
    # confidence exactly 1.0 (float32 saturation) and probabilities exactly 0
    x = torch.tensor([[200.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-200.0, 0.0, 0.0]])
    y = torch.tensor([0, 1, 2])
    s = CalibrationStatistics(3, input_type='logits').update(x, y)
    g = s.grid
    assert s.count[-1] == 1 and s.sum_conf[-1] == 1.0  # the exact-one cell
    assert s.cw_count[1, 0] == 1 and s.cw_count[2, 0] == 1  # p = 0 exactly in the exact-zero cell
    bins = g.bin_of_cells(15)
    # float32(1/3) = 0.33333334 > 5/15 -> bin 5; 0.5 -> bin 7 ((7/15, 8/15]); 1.0 -> the last bin
    assert bins[s.count > 0].tolist() == [5, 7, 14]
    # values exactly on bin edges go to the bin below: (lower, upper]
    edge = CalibrationStatistics(3, input_type='probs').update(
        torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.75, 0.25, 0.0]]), torch.tensor([0, 0, 1]))
    assert g.bin_of_cells(4)[edge.count > 0].tolist() == [1, 2, 3]
    assert g.bin_of_cells(4)[edge.cw_count[1] > 0].tolist() == [0, 0]  # p = 0 and 0.25 -> first bin
    assert edge.cw_count[1].sum() == 3 and edge.cw_count[1, 0] == 1


def test_binary_statistics(oracle):
    gen = torch.Generator().manual_seed(10)
    z = torch.randn(3, 1, 10, 12, generator=gen) * 3
    z[0, 0, 0, :4] = torch.tensor([40.0, -40.0, 0.0, 100.0])
    lab = (torch.rand(3, 10, 12, generator=gen) < torch.sigmoid(z[:, 0] / 2)).long()
    lab[2, :2] = 255
    keep = lab != 255
    p = torch.sigmoid(z[:, 0])
    pv, yv = p[keep].double(), lab[keep]
    for input_type, inp in (('probs', torch.sigmoid(z)), ('logits', z)):
        s = BinaryCalibrationStatistics(input_type=input_type).update(inp, lab)
        n = int(keep.sum())
        assert s.num_pixels == n
        pred = (p[keep] >= 0.5).long()
        conf = torch.where(pred == 1, p[keep], 1 - p[keep]).double()
        assert s.scalars['sum_correct'] == float((pred == yv).sum())
        np.testing.assert_allclose(s.scalars['sum_conf'], conf.sum().item(), rtol=1e-12)
        np.testing.assert_allclose(s.scalars['sum_brier'], ((pv - yv) ** 2).sum().item(), rtol=1e-6)
        assert torch.equal(s.cw_count.sum(1), torch.full((2,), float(n), dtype=torch.float64))
        m = calibration_metrics(s)
        assert 'ECE_10' in m and 'OE_10' in m and 'UE_10' in m and 'OE_15' not in m
        assert m['ECE'] == m['ECE_10']
        assert s.count[:s.grid.index(torch.tensor([0.5]))].sum() == 0  # no confidence below 1/2
    zl = torch.tensor([40.0, -40.0])
    yl = torch.tensor([0, 1])
    logit = BinaryCalibrationStatistics(input_type='logits').update(zl, yl)
    np.testing.assert_allclose(logit.scalars['sum_nll'], 80.0, rtol=1e-12)  # softplus(40) twice
    prob = BinaryCalibrationStatistics(input_type='probs').update(torch.sigmoid(zl), yl)
    np.testing.assert_allclose(prob.scalars['sum_nll'], 2 * -np.log(1e-7), rtol=1e-9)  # saturated, clamped
    thr = BinaryCalibrationStatistics(input_type='probs', threshold=0.8).update(
        torch.tensor([0.7, 0.9, 0.99995]), torch.tensor([0, 1, 1]))
    assert thr.scalars['sum_correct'] == 3.0
    np.testing.assert_allclose(thr.scalars['sum_conf'], 0.3 + 0.9 + 0.99995, rtol=1e-6)


def test_validation_errors():
    s = CalibrationStatistics(3, input_type='logits')
    x = torch.zeros(2, 3, 4, 4)
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r'\(2, 3, 4, 4\).*\(2, 5, 4\)'):
        s.update(x, torch.zeros(2, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='4 classes.*num_classes=3'):
        s.update(torch.zeros(2, 4, 4, 4), y)
    bad = x.clone()
    bad[0, 1, 2, 2] = float('nan')
    bad[0, 0, 0, 0] = float('-inf')
    with pytest.raises(ValueError, match=r'^img_7\.png: .*1 NaN and 1 inf'):
        s.update(bad, y, name='img_7.png')
    yb = y.clone()
    yb[0, 0, :3] = torch.tensor([3, -1, 7])
    with pytest.raises(ValueError, match=r'\[-1, 3, 7\] outside \[0, 3\).*ignore_index=255'):
        s.update(x, yb)
    with pytest.raises(ValueError, match='integer'):
        s.update(x, y.float())
    probs = CalibrationStatistics(3, input_type='probs')
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*max 2\.0"):
        probs.update(x + 2.0, y)
    with pytest.raises(ValueError, match='input_type'):
        CalibrationStatistics(3, input_type='auto')
    with pytest.raises(ValueError, match='num_classes'):
        CalibrationStatistics(1, input_type='logits')
    with pytest.raises(ValueError, match='shape'):
        s.from_tensor(torch.zeros(5))
    assert s.num_pixels == 0  # nothing was committed by the failed updates
    with pytest.raises(ValueError, match='no valid pixel'):
        calibration_metrics(s)
    s.update(x, torch.full_like(y, 255))
    with pytest.raises(ValueError, match='no valid pixel'):
        calibration_metrics(s)
    b = BinaryCalibrationStatistics(input_type='probs')
    with pytest.raises(ValueError, match=r'\[2\] outside \[0, 2\)'):
        b.update(torch.full((4,), 0.5), torch.tensor([0, 1, 2, 255]))
    with pytest.raises(ValueError, match='binary inputs of shape'):
        b.update(torch.full((2, 2, 3, 3), 0.5), torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match='threshold'):
        BinaryCalibrationStatistics(input_type='probs', threshold=1.5)


@pytest.mark.parametrize('kind', ['binary', 'probs', 'logits'])
def test_parallel_workers_equal_serial(oracle, kind):
    x, y = oracle.make_logits(6000, 4, seed=12)
    if kind == 'binary':
        x, y = torch.sigmoid(x[:, 0]).view(2, 1, 50, 60), (y % 2).view(2, 50, 60)
        make = lambda w: BinaryCalibrationStatistics(input_type='probs', chunk_size=500, num_workers=w)  # noqa: E731
    else:
        x = torch.softmax(x, 1) if kind == 'probs' else x
        x, y = x.view(2, 50, 60, 4).permute(0, 3, 1, 2), y.view(2, 50, 60)
        make = lambda w: CalibrationStatistics(4, input_type=kind, chunk_size=700, num_workers=w)  # noqa: E731
    threads = torch.get_num_threads()
    serial = make(1).update(x, y)
    parallel = make(3).update(x, y)
    close_state(serial, parallel)
    assert torch.get_num_threads() == threads  # the caller's intra-op threads are restored
    bad = y.clone()
    bad.view(-1)[-1] = 7  # an error raised inside a worker reaches the caller, the state is unchanged
    with pytest.raises(ValueError, match=r'^img: labels contain values \[7\]'):
        parallel.update(x, bad, name='img')
    close_state(serial, parallel)
    with pytest.raises(ValueError, match='num_workers'):
        CalibrationStatistics(4, input_type='probs', num_workers=0)


def test_deferred_checks_keep_the_problems_and_leave_the_pixels_out(oracle):
    x, y = oracle.make_logits(600, 4, seed=13)
    bad_x, bad_y = x.clone(), y.clone()
    bad_y[:3] = torch.tensor([4, -2, 9])
    bad_x[10, 2] = float('nan')
    bad_x[11, 0] = float('-inf')
    keep = torch.ones(600, dtype=torch.bool)
    keep[[0, 1, 2, 10, 11]] = False
    s = CalibrationStatistics(4, input_type='logits', chunk_size=128).update(bad_x, bad_y, defer_checks=True)
    ref = CalibrationStatistics(4, input_type='logits').update(x[keep], y[keep])
    close_state(s, ref, rtol=1e-6)  # float32 softmax rounding may move with a pixel's position in a chunk
    pr = s.problems
    assert (pr['labels'], pr['label_min'], pr['label_max'], pr['nonfinite']) == (3, -2, 9, 2)
    with pytest.raises(ValueError, match=r'^img: labels of 3 .*outside \[0, 4\).*as low as -2 and as high as 9'
                                         r'.*2 evaluated pixel\(s\) contain NaN or inf'):
        s.check_problems('img')
    with pytest.raises(ValueError, match='labels of 3'):
        calibration_metrics(s)
    merged = CalibrationStatistics(4, input_type='logits').update(x, y).merge(s)
    assert merged.problems['labels'] == 3  # problems travel with merges and copies, not with to_tensor
    assert merged.copy().problems['nonfinite'] == 2 and merged.from_tensor(merged.to_tensor()).problems['labels'] == 0
    assert s.reset().problems['labels'] == 0 and s.num_pixels == 0
    # probabilities: out of range and not summing to one
    p = torch.softmax(x, 1)
    p[5] = torch.tensor([0.5, 0.5, 0.5, 0.5])
    p[6, 0] = 1.5
    sp = CalibrationStatistics(4, input_type='probs').update(p, y, defer_checks=True)
    assert sp.problems['range'] == 1 and sp.problems['range_max'] == 1.5
    assert sp.problems['sums'] == 1 and sp.problems['sum_dev'] == pytest.approx(1.0)
    assert sp.num_pixels == 598
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*do not sum to 1"):
        sp.check_problems()
    b = BinaryCalibrationStatistics(input_type='probs').update(torch.tensor([0.2, float('nan'), 0.7, 0.9]),
                                                               torch.tensor([0, 1, 3, 255]), defer_checks=True)
    assert b.num_pixels == 1 and b.problems['labels'] == 1 and b.problems['nonfinite'] == 1
    # without defer_checks the same inputs raise the readable errors at once, the state unchanged
    with pytest.raises(ValueError, match=r'\[-2, 4, 9\] outside \[0, 4\)'):
        s.update(bad_x, bad_y)
    assert s.num_pixels == 0


@pytest.mark.parametrize('input_type', ['logits', 'probs'])
def test_class_pass_length_changes_nothing(monkeypatch, input_type):
    """Chunks are walked in passes of _CLASS_PASS pixels: passes that end mid-chunk (and a short last pass) give
    the statistics of one pass over the whole chunk, ignored pixels and the NLL of a vanishing p_y included."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 9, 11, generator=g) * 8
    x[0, 2, 1, 1] = 150.0  # p_y underflows for the pixels labelled otherwise
    y = torch.randint(0, 6, (2, 9, 11), generator=g)
    y[1, :2] = 255
    inputs = x if input_type == 'logits' else torch.softmax(x, 1)
    whole = CalibrationStatistics(6, input_type=input_type, num_workers=1).update(inputs, y)
    monkeypatch.setattr(statistics_module, '_CLASS_PASS', 13)  # 99 pixels per chunk: 7 passes of 13 and one of 8
    sliced = CalibrationStatistics(6, input_type=input_type, num_workers=1).update(inputs, y)
    assert sliced.num_pixels == whole.num_pixels == 2 * 99 - 22
    assert torch.equal(sliced.cw_count, whole.cw_count) and torch.equal(sliced.count, whole.count)
    # the softmax of a short row takes the scalar exp instead of the vectorised one: probabilities may move by ulps
    close_state(sliced, whole, rtol=1e-12 if input_type == 'probs' else 1e-6)
