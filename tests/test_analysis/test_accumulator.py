"""CalibrationAnalysis against naive per-pixel numpy references written here."""
import math

import numpy as np
import pytest
import torch

from calibseg.analysis import CalibrationAnalysis

IGNORE = 255
B = 15


def _images(seed: int = 0, k: int = 4):
    """Five images: ignored regions, a map without boundaries, an entirely ignored map, odd sizes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (h, w) in enumerate([(9, 11), (7, 7), (8, 5), (6, 9), (5, 6)]):
        logits = torch.randn(k, h, w, generator=g) * 2.5
        labels = torch.randint(0, k, (h, w), generator=g)
        labels[:h // 2, :w // 2] = labels[0, 0]  # a region, so there are interior pixels
        if i == 0:
            labels[-2:, :3] = IGNORE
        if i == 1:
            labels[:] = 2  # no boundary: every pixel at infinite distance
        if i == 2:
            labels[:] = IGNORE  # nothing valid
        if i == 3:
            labels[1:3, 4:6] = IGNORE
        out.append((logits, labels))
    return out


def _naive_boundary_distance(lab: np.ndarray) -> np.ndarray:
    h, w = lab.shape
    valid = lab != IGNORE
    boundary = []
    for y in range(h):
        for x in range(w):
            if not valid[y, x]:
                continue
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and lab[yy, xx] != lab[y, x]:
                    boundary.append((y, x))
                    break
    dist = np.full((h, w), np.nan)
    for y in range(h):
        for x in range(w):
            if valid[y, x]:
                dist[y, x] = min((math.hypot(y - by, x - bx) for by, bx in boundary), default=math.inf)
    return dist


def _bin(c: float) -> int:
    return min(max(math.ceil(c * B) - 1, 0), B - 1)


def _ece(conf, correct) -> float:
    if not len(conf):
        return math.nan
    n_b, s_c, s_a = np.zeros(B), np.zeros(B), np.zeros(B)
    for c, a in zip(conf, correct):
        b = _bin(c)
        n_b[b] += 1
        s_c[b] += c
        s_a[b] += a
    return 100.0 * np.abs(s_a - s_c).sum() / len(conf)


def _pixels(images):
    rows = []  # (image, conf, pred, label, distance)
    for i, (logits, labels) in enumerate(images):
        p = torch.softmax(logits.double(), 0).numpy()
        lab = labels.numpy()
        dist = _naive_boundary_distance(lab)
        for y in range(lab.shape[0]):
            for x in range(lab.shape[1]):
                if lab[y, x] != IGNORE:
                    rows.append((i, float(p[:, y, x].max()), int(p[:, y, x].argmax()), int(lab[y, x]), dist[y, x]))
    return rows


@pytest.fixture(scope='module')
def analysed():
    images = _images()
    analysis = CalibrationAnalysis(num_classes=4, ignore_index=IGNORE, distance_bands=(1, 2, 3),
                                   boundary_width=1, worst_k=2, class_names=['a', 'b', 'c', 'd'])
    for i, (logits, labels) in enumerate(images):
        analysis.update(logits, labels, index=i, img_path=f'img{i}.jpg')
    return images, analysis, analysis.results(), _pixels(images)


def test_per_image_ece_accuracy_and_worst_images(analysed):
    images, analysis, results, rows = analysed
    for record in results['images']:
        mine = [r for r in rows if r[0] == record['index']]
        if not mine:
            assert record['ECE_15'] is None and record['pixels'] == 0
            continue
        conf = [r[1] for r in mine]
        correct = [float(r[2] == r[3]) for r in mine]
        assert record['ECE_15'] == pytest.approx(_ece(conf, correct), abs=1e-4)
        assert record['Acc'] == pytest.approx(100.0 * np.mean(correct), abs=1e-4)
        assert record['pixels'] == len(mine)
    by_ece = sorted((r for r in results['images'] if r['ECE_15'] is not None), key=lambda r: -r['ECE_15'])
    assert results['worst'] == [r['index'] for r in by_ece[:2]]
    assert all(w.maps['confidence'].shape == images[w.index][1].shape for w in analysis.worst_images())


def test_pooled_ece_and_miou_match_naive(analysed):
    _, _, results, rows = analysed
    head = results['headline']
    conf = [r[1] for r in rows]
    correct = [float(r[2] == r[3]) for r in rows]
    assert head['ECE_15'] == pytest.approx(_ece(conf, correct), abs=1e-4)
    ious = []
    for k in range(4):
        inter = sum(1 for r in rows if r[2] == k and r[3] == k)
        union = sum(1 for r in rows if r[2] == k or r[3] == k)
        if union:
            ious.append(inter / union)
    assert head['mIoU'] == pytest.approx(100.0 * np.mean(ious), abs=1e-4)
    assert head['aAcc'] == pytest.approx(100.0 * np.mean(correct), abs=1e-4)


def test_per_predicted_class_ece(analysed):
    _, _, results, rows = analysed
    classes = results['classes']
    assert classes['name'] == ['a', 'b', 'c', 'd']
    for k in range(4):
        mine = [r for r in rows if r[2] == k]
        assert classes['predicted_pixels'][k] == len(mine)
        assert classes['labelled_pixels'][k] == sum(1 for r in rows if r[3] == k)
        expected = _ece([r[1] for r in mine], [float(r[2] == r[3]) for r in mine]) if mine else None
        assert classes['ECE_15'][k] == (None if expected is None else pytest.approx(expected, abs=1e-4))


def test_boundary_and_interior_keys_match_naive(analysed):
    _, _, results, rows = analysed
    b = results['boundary']
    near = [r for r in rows if r[4] <= 1]
    far = [r for r in rows if r[4] > 1]
    ece_near = _ece([r[1] for r in near], [float(r[2] == r[3]) for r in near])
    ece_far = _ece([r[1] for r in far], [float(r[2] == r[3]) for r in far])
    assert b['boundary_ECE_15'] == pytest.approx(ece_near, abs=1e-4)
    assert b['interior_ECE_15'] == pytest.approx(ece_far, abs=1e-4)
    assert b['boundary_Acc'] == pytest.approx(100.0 * np.mean([r[2] == r[3] for r in near]), abs=1e-4)
    assert b['boundary_frac'] == pytest.approx(100.0 * len(near) / len(rows), abs=1e-4)
    share = ece_near * len(near) / (ece_near * len(near) + ece_far * len(far))
    assert b['boundary_error_share'] == pytest.approx(100.0 * share, abs=1e-4)
    bands = results['bands']
    edges = [-math.inf, 1, 2, 3, math.inf]
    for i, count in enumerate(bands['count']):
        assert count == sum(1 for r in rows if edges[i] < r[4] <= edges[i + 1])


def test_one_sided_evaluation_reports_nan_for_the_missing_side():
    analysis = CalibrationAnalysis(num_classes=3, distance_bands=(2,), boundary_width=2, worst_k=0)
    analysis.update(torch.randn(3, 4, 4), torch.ones(4, 4, dtype=torch.long), index=0)  # no boundary at all
    b = analysis.boundary()
    assert math.isnan(b['boundary_ECE_15']) and b['boundary_frac'] == 0.0
    assert not math.isnan(b['interior_ECE_15'])


def test_batch_order_does_not_matter():
    images = _images(seed=3)
    results = []
    for order in (range(5), reversed(range(5))):
        analysis = CalibrationAnalysis(num_classes=4, distance_bands=(1, 2), boundary_width=2, worst_k=3)
        for i in order:
            analysis.update(*images[i], index=i, img_path=f'{i}.jpg')
        results.append(analysis.results())
    assert results[0]['headline'] == pytest.approx(results[1]['headline'], nan_ok=True)
    assert results[0]['worst'] == results[1]['worst']
    assert results[0]['images'] == sorted(results[1]['images'], key=lambda r: r['index'])


def test_one_channel_heads_use_sigmoid_and_report_saliency_measures():
    g = torch.Generator().manual_seed(1)
    analysis = CalibrationAnalysis(num_classes=1, distance_bands=(2,), boundary_width=2, worst_k=1)
    z = torch.randn(1, 8, 8, generator=g) * 3
    y = (torch.rand(8, 8, generator=g) > 0.6).long()
    analysis.update(z, y, index=0)
    head = analysis.headline()
    p = torch.sigmoid(z[0]).double()
    pred = (p >= 0.5).long()
    conf = torch.where(pred == 1, p, 1 - p)
    assert head['ECE_10'] is not None and head['MAE'] == pytest.approx(float((p - y).abs().mean()), abs=1e-4)
    assert head['ECE_15'] == pytest.approx(_ece(conf.flatten().tolist(),
                                                (pred == y).double().flatten().tolist()), abs=1e-4)


def test_bad_inputs_are_named():
    analysis = CalibrationAnalysis(num_classes=3, distance_bands=(2,), boundary_width=2)
    with pytest.raises(ValueError, match='x.jpg: logits have 4 channels, expected 3'):
        analysis.update(torch.randn(4, 3, 3), torch.zeros(3, 3, dtype=torch.long), index=0, img_path='x.jpg')
    with pytest.raises(ValueError, match='must be one of distance_bands'):
        CalibrationAnalysis(num_classes=3, distance_bands=(1, 4), boundary_width=2)
