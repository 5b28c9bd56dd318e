"""Naive per-pixel references (loops, sorting and brute force; numpy only) for the spatial calibration statistics
and the failure-detection keys.

Written from the distance contract of issue 12: a boundary pixel is a valid pixel with a 4-connected in-image
neighbour of another label (an ignored neighbour counts as different); the distance of a valid pixel is the
smallest Euclidean distance to a boundary pixel (inf without boundary pixels); ignored pixels get NaN.
"""
from __future__ import annotations

import numpy as np
import torch


def naive_boundary(labels: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    h, w = labels.shape
    out = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            if labels[i, j] == ignore_index:
                continue
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                a, b = i + di, j + dj
                if 0 <= a < h and 0 <= b < w and labels[a, b] != labels[i, j]:
                    out[i, j] = True
    return out


def naive_distance(labels: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    points = np.argwhere(naive_boundary(labels, ignore_index))
    out = np.full(labels.shape, np.nan)
    for i, j in np.argwhere(labels != ignore_index):
        out[i, j] = np.sqrt(((points - [i, j]) ** 2).sum(1)).min() if len(points) else np.inf
    return out


def top_label(inputs: torch.Tensor, labels: torch.Tensor, *, binary: bool = False, input_type: str = 'logits',
              threshold: float = 0.5):
    """Per-pixel float64 confidence and correctness maps ``(H, W)`` with the library's float32 conventions."""
    if binary:
        p = (torch.sigmoid(inputs) if input_type == 'logits' else inputs).float().reshape(labels.shape)
        fg = p >= threshold
        conf = torch.where(fg, p, 1 - p)
        pred = fg.long()
    else:
        p = torch.softmax(inputs, 0) if input_type == 'logits' else inputs
        conf, pred = p.max(0)
    return conf.double().numpy(), (pred == labels).numpy().astype(np.float64)


def ece15(conf: np.ndarray, correct: np.ndarray) -> float:
    """Top-label ECE with 15 equal-width bins (lower, upper], c = 0 in the first bin; percent."""
    bins = np.clip(np.ceil(conf * 15) - 1, 0, 14).astype(int)
    total = sum(abs(correct[bins == b].sum() - conf[bins == b].sum()) for b in range(15))
    return 100.0 * total / len(conf)


def band_reference(samples, edges, *, ignore_index: int = 255, binary: bool = False, input_type: str = 'logits'):
    """Per band (``d <= e1``, ..., ``d > e_last``): pixel count, ECE_15, accuracy and confidence (percent)."""
    confs, cors, dists = [], [], []
    for inputs, labels in samples:
        lab = labels.numpy()
        conf, cor = top_label(inputs, labels, binary=binary, input_type=input_type)
        dist = naive_distance(lab, ignore_index)
        valid = lab != ignore_index
        confs.append(conf[valid])
        cors.append(cor[valid])
        dists.append(dist[valid])
    conf, cor, dist = np.concatenate(confs), np.concatenate(cors), np.concatenate(dists)
    lows = [-np.inf] + list(edges)
    highs = list(edges) + [np.inf]
    out = []
    for lo, hi in zip(lows, highs):
        sel = (dist > lo) & (dist <= hi) if np.isfinite(hi) else dist > lo
        if not sel.any():
            out.append(dict(count=0, ECE=None, accuracy=None, confidence=None))
            continue
        out.append(dict(count=int(sel.sum()), ECE=ece15(conf[sel], cor[sel]), accuracy=100 * cor[sel].mean(),
                        confidence=100 * conf[sel].mean()))
    return out


def naive_fpr95(conf: np.ndarray, correct: np.ndarray) -> float:
    """Per pixel: tau = confidence of the ceil(0.95 N+)-th most confident correct pixel; wrong pixels >= tau."""
    pos = np.sort(conf[correct == 1])[::-1]
    k = -(-95 * len(pos) // 100)
    tau = pos[k - 1]
    return float(np.mean(conf[correct == 0] >= tau))


def naive_aupr_err(conf: np.ndarray, correct: np.ndarray) -> float:
    """Average precision of wrong pixels ranked by increasing confidence, tied confidences grouped."""
    wrong = correct == 0
    order = np.argsort(conf, kind='stable')
    c, w = conf[order], wrong[order]
    tp, fp = np.cumsum(w), np.cumsum(~w)
    last = np.r_[c[1:] != c[:-1], True]
    tp, fp = tp[last], fp[last]
    recall = tp / wrong.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * tp / (tp + fp)))
