"""Properties of the per-pixel calibration statistics and metrics on random inputs.

Random pixel counts, class counts, ignore masks, logit scales (up to float32 saturation: exact 0 and 1 softmax
entries) and input dtypes (float64, float32, float16, bfloat16). Invariants: a batch split in two updates equals
one update, the order of the pixels does not matter, ignored pixels (whatever they hold) have no effect, every
calibration error lies in [0, 100] and every value is finite (NaN only where a metric is documented undefined).

Exactness: torch's CPU softmax over the class dimension of a ``(K, pixels)`` block rounds a pixel's float32 (or
half) probabilities differently (by one ulp) depending on the pixel's position in the block (vectorised body vs
tail), so for low-precision *logits* a split or a reordering changes a confidence by one ulp; the statistics are
then compared up to that rounding (scalars to 1e-5 relative, same pixel count), and exactly for float64 logits and
for probability inputs of every dtype (no softmax inside).
"""
import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from calibseg.functional.calibration import BinaryCalibrationStatistics, CalibrationStatistics, calibration_metrics

IGNORE = 255
SCALES = (0.05, 1.0, 4.0, 30.0, 1e3)
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# documented as NaN: AUROC/FPR95/AUPR_err when all pixels are correct or all wrong; KDECE without correct pixels
# or when they all share one confidence
MAY_BE_NAN = ('AUROC', 'FPR95', 'AUPR_err', 'KDECE')
PERCENT_BOUNDED = ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE', 'RMSCE', 'dECE', 'OE', 'UE', 'KSCE', 'KDECE', 'MMCE',
                   'smECE', 'SECE', 'AUROC', 'AURC', 'FPR95', 'AUPR_err', 'Acc')
BINS = (5, 15)


@st.composite
def pixel_cases(draw, binary: bool = False):
    """``(logits, labels (N,))`` with at least one evaluated pixel: logits ``(N, K)``, or ``(N,)`` (one-channel
    foreground logits, labels 0/1) when ``binary``."""
    n = draw(st.integers(1, 48))
    k = 2 if binary else draw(st.integers(2, 6))
    scale = draw(st.sampled_from(SCALES))
    dtype = draw(st.sampled_from(DTYPES))
    ignored = draw(st.floats(0.0, 0.6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (n,) if binary else (n, k)
    logits = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    labels = torch.randint(0, k, (n,), generator=gen)
    drop = torch.rand(n, generator=gen) < ignored
    drop[0] = False
    labels[drop] = IGNORE
    return logits, labels


def _stats(binary: bool, k: int, input_type: str = 'logits'):
    if binary:
        return BinaryCalibrationStatistics(input_type=input_type, ignore_index=IGNORE)
    return CalibrationStatistics(k, input_type=input_type, ignore_index=IGNORE)


def _as_probs(logits, binary):
    """The probabilities of ``logits`` in their dtype (computed once, per pixel, in float32)."""
    p = torch.sigmoid(logits.float()) if binary else torch.softmax(logits.float(), -1)
    return p.to(logits.dtype)


def _metrics(stats):
    return calibration_metrics(stats, bins=BINS)


def _same_metrics(a, b, rel=1e-9):
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if math.isnan(x) or math.isnan(y):
            assert math.isnan(x) and math.isnan(y), key
        else:
            assert abs(x - y) <= rel * max(1.0, abs(x)) + 1e-9, (key, x, y)


def _same_state(a, b, logits=None, binary=False):
    """Equal statistics; for low-precision logits (``logits`` given) up to one ulp of every probability."""
    if logits is None:
        torch.testing.assert_close(a.to_tensor(), b.to_tensor(), rtol=1e-12, atol=1e-9)
        return
    eps = torch.finfo(torch.float32 if logits.dtype == torch.float32 else logits.dtype).eps
    p = torch.sigmoid(logits.double()) if binary else torch.softmax(logits.double(), -1)
    p = torch.stack([1 - p, p], -1) if binary else p
    top2 = p.topk(2, -1).values
    near_ties = int(((top2[:, 0] - top2[:, 1]) <= 8 * eps).sum())  # one ulp may flip the prediction there
    assert a.num_pixels == b.num_pixels
    slack = 8 * eps * a.num_pixels + 2 * near_ties
    for key, value in a.scalars.items():
        assert abs(value - b.scalars[key]) <= slack, (key, value, b.scalars[key], slack)


def _exact(logits, input_type):
    return input_type == 'probs' or logits.dtype == torch.float64


def _rounding(logits, input_type):
    """``None`` where the statistics must agree exactly, else the logits (to size the rounding slack)."""
    return None if _exact(logits, input_type) else logits


def _k(logits, binary):
    return 2 if binary else logits.shape[1]


def any_case():
    """A multi-class or a one-channel case: ``(logits, labels, binary)``."""
    return st.one_of(pixel_cases().map(lambda c: (*c, False)), pixel_cases(binary=True).map(lambda c: (*c, True)))


@given(case=any_case(), cut=st.floats(0.0, 1.0), input_type=st.sampled_from(['logits', 'probs']))
def test_batch_split_equals_one_shot(case, cut, input_type):
    logits, labels, binary = case
    x = _as_probs(logits, binary) if input_type == 'probs' else logits
    k, exact = _k(logits, binary), _exact(logits, input_type)
    whole = _stats(binary, k, input_type).update(x, labels)
    s = int(round(cut * labels.numel()))
    parts = _stats(binary, k, input_type)
    for sl in (slice(0, s), slice(s, None)):
        if labels[sl].numel():
            parts.update(x[sl], labels[sl])
    _same_state(whole, parts, _rounding(logits, input_type), binary)
    if exact:
        _same_metrics(_metrics(whole), _metrics(parts))
    merged = _stats(binary, k, input_type).update(x[:s], labels[:s]) if s else _stats(binary, k, input_type)
    if s < labels.numel():
        merged = merged + _stats(binary, k, input_type).update(x[s:], labels[s:])
    _same_state(whole, merged, _rounding(logits, input_type), binary)


@given(case=any_case(), seed=st.integers(0, 1000), input_type=st.sampled_from(['logits', 'probs']))
def test_pixel_order_does_not_matter(case, seed, input_type):
    logits, labels, binary = case
    x = _as_probs(logits, binary) if input_type == 'probs' else logits
    k, exact = _k(logits, binary), _exact(logits, input_type)
    perm = torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))
    a = _stats(binary, k, input_type).update(x, labels)
    b = _stats(binary, k, input_type).update(x[perm], labels[perm])
    _same_state(a, b, _rounding(logits, input_type), binary)
    if exact:
        _same_metrics(_metrics(a), _metrics(b))


@given(case=any_case(), junk=st.sampled_from([float('nan'), float('inf'), -1e30, 7.0]))
def test_ignored_pixels_have_no_effect(case, junk):
    logits, labels, binary = case
    k = _k(logits, binary)
    keep = labels != IGNORE
    dirty = logits.clone()
    dirty[~keep] = junk  # whatever an ignored pixel holds
    a = _stats(binary, k).update(dirty, labels)
    b = _stats(binary, k).update(logits[keep], labels[keep])
    exact = _exact(logits, 'logits')
    _same_state(a, b, _rounding(logits, 'logits'), binary)
    if exact:
        _same_metrics(_metrics(a), _metrics(b))


@given(case=any_case())
def test_metrics_are_bounded_and_finite(case):
    logits, labels, binary = case
    stats = _stats(binary, _k(logits, binary)).update(logits, labels)
    metrics = _metrics(stats)
    for key, value in metrics.items():
        family = key.rsplit('_', 1)[0] if key.rsplit('_', 1)[-1].isdigit() else key
        if math.isnan(value):
            assert family in MAY_BE_NAN, key
            continue
        assert math.isfinite(value), key
        if family in PERCENT_BOUNDED:
            assert -1e-9 <= value <= 100.0 + 1e-9, (key, value)
    assert metrics['NLL'] >= 0.0 and 0.0 <= metrics['Brier'] <= 2.0 + 1e-6
    correct = stats.scalars['sum_correct']
    if 0 < correct < stats.num_pixels:  # AUROC is defined
        assert math.isfinite(metrics['AUROC'])


@given(case=pixel_cases(), factor=st.floats(1.02, 3.0))
def test_probabilities_must_sum_to_one(case, factor):
    logits, labels = case
    k = logits.shape[1]
    probs = torch.softmax(logits.float(), 1).to(logits.dtype)
    stats = CalibrationStatistics(k, input_type='probs', ignore_index=IGNORE).update(probs, labels)
    assert stats.num_pixels == int((labels != IGNORE).sum())
    bad = (probs.double() / factor).to(logits.dtype)  # every row sums to 1 / factor
    try:
        CalibrationStatistics(k, input_type='probs', ignore_index=IGNORE).update(bad, labels)
    except ValueError as err:
        assert 'do not sum to 1' in str(err)
    else:
        raise AssertionError('unnormalised probabilities were accepted')
