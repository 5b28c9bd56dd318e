"""Shared data and naive per-pixel numpy oracles for the calibration tests.

The oracles work on the float32 softmax probabilities converted to float64 (the values the library bins) and
follow the definitions of ``shared/reference/metrics.md`` literally, one pixel at a time (sorting, O(N^2)
kernels); they are exposed through the ``oracle`` fixture.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: intra-op threads only add latency (and the CI machine has 2 busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_logits(n: int, k: int, seed: int = 0, *, saturate: float = 0.05, temperature: float = 1.6):
    """``(N, K)`` float32 logits and ``(N,)`` labels drawn from a miscalibrated model.

    Labels are sampled from ``softmax(logits / temperature)`` (so the model is over-confident), a fraction
    ``saturate`` of pixels gets a +60 logit (float32 confidence exactly 1.0, others exactly 0 or tiny).
    """
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=gen) * 2.5
    sat = torch.rand(n, generator=gen) < saturate
    hot = torch.randint(0, k, (n,), generator=gen)
    logits[sat, hot[sat]] += 60.0
    probs_true = torch.softmax(logits.double() / temperature, 1)
    labels = torch.multinomial(probs_true, 1, generator=gen).squeeze(1)
    return logits.float(), labels


def probs_of(logits: torch.Tensor) -> np.ndarray:
    """The float32 softmax the library uses, as float64 numpy."""
    return torch.softmax(logits, dim=-1).double().numpy()


# ----------------------------------------------------------------------------------------------- binned
def width_bins(scores: np.ndarray, n_bins: int) -> np.ndarray:
    return np.clip(np.ceil(scores * n_bins) - 1, 0, n_bins - 1).astype(np.int64)


def bin_stats(scores, targets, bins, n_bins):
    n = np.bincount(bins, minlength=n_bins).astype(np.float64)
    s = np.bincount(bins, weights=scores, minlength=n_bins)
    a = np.bincount(bins, weights=targets, minlength=n_bins)
    return n, s, a


def errors_from_bins(n, s, a, total):
    nz = n > 0
    n, s, a = n[nz], s[nz], a[nz]
    conf, acc = s / n, a / n
    w = n / total
    out = dict(ECE=np.sum(w * np.abs(acc - conf)), MCE=np.max(np.abs(acc - conf)),
               RMSCE=np.sqrt(np.sum(w * (acc - conf) ** 2)),
               OE=np.sum(w * conf * np.maximum(conf - acc, 0)), UE=np.sum(w * conf * np.maximum(acc - conf, 0)))
    two = n >= 2
    out['dECE'] = np.sqrt(max(0.0, np.sum(w[two] * ((acc[two] - conf[two]) ** 2
                                                    - acc[two] * (1 - acc[two]) / (n[two] - 1)))))
    return out


def width_errors(scores, targets, n_bins):
    return errors_from_bins(*bin_stats(scores, targets, width_bins(scores, n_bins), n_bins), len(scores))


def mass_ece(scores, targets, n_bins):
    order = np.argsort(scores, kind='stable')
    total = 0.0
    for grp in np.array_split(order, n_bins):
        total += abs(np.sum(targets[grp] - scores[grp]))
    return total / len(scores)


def top_label(p: np.ndarray, y: np.ndarray):
    pred = np.argmax(p, 1)
    return p[np.arange(len(y)), pred], (pred == y).astype(np.float64)


def classwise(p, y, n_bins, fn, classes=None):
    classes = range(p.shape[1]) if classes is None else classes
    return float(np.mean([fn(p[:, k], (y == k).astype(np.float64), n_bins) for k in classes]))


def cw_width(p, y, n_bins, classes=None):
    return classwise(p, y, n_bins, lambda s, t, b: width_errors(s, t, b)['ECE'], classes)


def cw_mass(p, y, n_bins, classes=None):
    return classwise(p, y, n_bins, mass_ece, classes)


# ----------------------------------------------------------------------------------------------- ranking
def ks(conf, correct):
    order = np.argsort(conf, kind='stable')
    c, a = conf[order], correct[order]
    cum = np.cumsum(a - c)
    last_of_value = np.r_[c[1:] != c[:-1], True]  # evaluate at the end of every group of equal values
    return np.max(np.abs(cum[last_of_value])) / len(c)


def average_ranks(x):
    order = np.argsort(x, kind='stable')
    ranks = np.empty(len(x))
    xs = x[order]
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def auroc(conf, correct):
    r = average_ranks(conf)
    pos = correct == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (r[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def aurc(conf, correct):
    order = np.argsort(-conf, kind='stable')
    err = np.cumsum(1.0 - correct[order])
    return np.mean(err / np.arange(1, len(conf) + 1))


# ----------------------------------------------------------------------------------------------- kernels
def reflected_gauss(t, x, h):
    """``(T, N)`` reflected Gaussian density on [0, 1]: images at x, -x, 2-x (and x±2, -x+4 when h is large)."""
    d = t[:, None]
    out = np.zeros((len(t), len(x)))
    images = (x, -x, 2 - x) if h < 0.12 else (x, -x, 2 - x, x - 2, x + 2, -x - 2, 4 - x)
    for img in images:
        out += np.exp(-0.5 * ((d - img[None, :]) / h) ** 2)
    return out / (h * np.sqrt(2 * np.pi))


def kdece(conf, correct, bandwidth=None):
    """Zhang et al.'s KDE-ECE (Mix-n-Match, ICML 2020), read from their public evaluation code, one pixel at a time.

    Triweight kernel of standard deviation h = std(confidences of correct pixels) * (2N)^-1/5 (KDEpy scales a
    kernel to unit variance: support |u| < 3h), every point mirrored once (-c below 1/2, 2 - c from 1/2 on),
    linear binning onto 2^14 nodes of [-0.6, 1.6], 'same' convolution with the kernel sampled at the node
    offsets, densities zeroed outside (0, 1) and doubled; nodes where both densities are <= 1e-6 carry the
    previous integrand; trapezoid integrals over the nodes in [0, 1].
    """
    n = len(conf)
    good = conf[correct == 1]
    h = np.std(good) * (2 * n) ** -0.2 if bandwidth is None else bandwidth
    t = np.linspace(-0.6, 1.6, 2**14)
    dx = 2.2 / (2**14 - 1)

    def density(points):
        data = np.concatenate([points, np.where(points < 0.5, -points, 2.0 - points)])
        binned = np.zeros(len(t) + 1)
        for d in data:
            u = (d - t[0]) / dx
            i = int(u)
            binned[i] += 1.0 - (u - i)
            binned[i + 1] += u - i
        binned = binned[:-1] / len(data)
        reach = int(np.floor(3 * h / dx))
        z = np.linspace(-dx * reach, dx * reach, 2 * reach + 1) / (3 * h)
        kern = np.where(np.abs(z) < 1, 35 / 32 * (1 - z**2) ** 3 / (3 * h), 0.0)
        dens = np.convolve(binned, kern, mode='same')
        dens[(t <= 0) | (t >= 1)] = 0.0
        return 2.0 * dens

    pp1, pp2 = density(good), density(conf)
    perc = correct.mean()
    integral = np.zeros(len(t))
    for i in range(len(t)):
        if max(pp1[i], pp2[i]) > 1e-6:
            with np.errstate(divide='ignore', invalid='ignore'):
                accu = min(perc * pp1[i] / pp2[i], 1.0)
            if not np.isnan(accu):
                integral[i] = abs(t[i] - accu) * pp2[i]
        elif i > 1:
            integral[i] = integral[i - 1]
    keep = (t >= 0) & (t <= 1)
    return np.trapezoid(integral[keep], t[keep]) / np.trapezoid(pp2[keep], t[keep])


def kdece_gaussian(conf, correct, n_t=4001):
    h = 1.06 * np.std(conf) * len(conf) ** -0.2
    t = np.linspace(0, 1, n_t)
    k = reflected_gauss(t, conf, h)
    rho = k.sum(1) / len(conf)
    rho1 = (k * correct[None, :]).sum(1) / len(conf)
    return np.trapezoid(np.abs(t * rho - rho1), t) / np.trapezoid(rho, t)


def mmce(conf, correct, width=0.4):
    r = correct - conf
    k = np.exp(-np.abs(conf[:, None] - conf[None, :]) / width)
    return np.sqrt(max(r @ k @ r, 0.0)) / len(conf)


def sece(conf, correct, h=0.05):
    k = np.exp(-0.5 * ((conf[:, None] - conf[None, :]) / h) ** 2)
    a_hat = (k @ correct) / k.sum(1)
    return np.mean(np.abs(a_hat - conf))


def smooth_ece_sigma(conf, correct, sigma):
    m = max(200, round(10 / sigma))
    t = np.linspace(0, 1, m)
    k = reflected_gauss(t, conf, sigma)
    return np.abs(k @ (conf - correct)).sum() / k.sum()


def smece(conf, correct):
    def below(s):
        return s < 1e-3 or s < smooth_ece_sigma(conf, correct, s)
    lo, hi = 0.0, 1.0
    for _ in range(10):
        mid = (lo + hi) / 2
        if below(mid):
            lo = mid
        else:
            hi = mid
    return smooth_ece_sigma(conf, correct, hi), hi


@pytest.fixture(scope='session')
def oracle():
    return SimpleNamespace(
        make_logits=make_logits, probs_of=probs_of, width_errors=width_errors, mass_ece=mass_ece,
        top_label=top_label, cw_width=cw_width, cw_mass=cw_mass, ks=ks, auroc=auroc, aurc=aurc, kdece=kdece,
        kdece_gaussian=kdece_gaussian,
        mmce=mmce, sece=sece, smece=smece, smooth_ece_sigma=smooth_ece_sigma, width_bins=width_bins)
