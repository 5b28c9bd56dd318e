import math

import numpy as np
import pytest
import torch

from calibseg.calibrators import DEFAULT_GRID, TemperatureScaling, grid_statistics
from calibseg.calibrators.data import PixelPasses, make_stream

T0 = 2.5


def test_recovers_known_temperature(synth):
    # y ~ Categorical(softmax(z)) is calibrated for z; the model reports z * T0, so the optimum is T = T0.
    z, y = synth.calibrated_pixels(40000, 5, seed=1)
    ts = TemperatureScaling(num_classes=5).fit(z * T0, y, ignore_index=None)
    assert ts.fitted
    assert abs(ts.temperature.item() - T0) < 0.05
    assert ts.fit_info['converged'] and ts.fit_info['passes'] <= 12
    assert ts.fit_info['nll'] < ts.fit_info['nll_at_t1']
    torch.testing.assert_close(ts(z * T0), z * T0 / ts.temperature.detach())


def test_nll_optimum_is_stationary(synth):
    """The Newton result is a stationary point of the mean NLL (checked by autograd)."""
    z, y = synth.calibrated_pixels(5000, 4, seed=2)
    ts = TemperatureScaling(num_classes=4).fit(z * 1.7, y, ignore_index=None)
    beta = torch.tensor(1.0 / ts.temperature.item(), dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(z.double() * 1.7 * beta, y)
    (grad,) = torch.autograd.grad(loss, beta)
    assert abs(grad.item()) < 1e-6


@pytest.mark.parametrize('metric', ['ece', 'nll'])
def test_grid_picks_nearest_grid_point(metric, synth):
    z, y = synth.calibrated_pixels(60000, 5, seed=3)
    ts = TemperatureScaling(num_classes=5, method='grid', grid_metric=metric).fit(z * T0, y, ignore_index=None)
    assert ts.temperature.item() == pytest.approx(T0, abs=1e-5)
    assert ts.fit_info['passes'] == 1
    assert len(ts.fit_info['grid_ece']) == len(DEFAULT_GRID) == 100
    assert DEFAULT_GRID[0] == 0.1 and DEFAULT_GRID[-1] == 10.0 and DEFAULT_GRID[24] == T0


def _reference_grid(z, y, temps, bins):
    """ECE (equal-width, (lower, upper], 0 in the first bin) and mean NLL per temperature, one at a time."""
    eces, nlls = [], []
    for t in temps:
        p = torch.softmax(z.double() / t, dim=1).numpy()
        conf, pred = p.max(1), p.argmax(1)
        correct = (pred == y.numpy()).astype(float)
        idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
        ece = 0.0
        for b in range(bins):
            m = idx == b
            if m.any():
                ece += abs(correct[m].sum() - conf[m].sum())
        eces.append(ece / len(conf))
        nlls.append(float(torch.nn.functional.cross_entropy(z.double() / t, y)))
    return np.array(eces), np.array(nlls)


def test_grid_statistics_match_reference(synth):
    z, y = synth.calibrated_pixels(3000, 6, seed=4)
    z = z * 2.0
    temps = [0.3, 1.0, 1.9, 4.0]
    passes = PixelPasses(make_stream(z, y), num_classes=6, ignore_index=None, dtype=torch.float32,
                         chunk_pixels=700)
    stats = grid_statistics(passes, temps, num_bins=10)
    ece, nll = _reference_grid(z, y, temps, 10)
    np.testing.assert_allclose(stats['ece'].numpy(), ece, atol=2e-6)
    np.testing.assert_allclose(stats['mean_nll'].numpy(), nll, rtol=1e-5)
    assert stats['count'].sum(dim=1).tolist() == [3000.0] * 4


def test_grid_confidence_one_lands_in_last_bin(synth):
    z = torch.tensor([[100.0, 0.0, 0.0]])  # confidence rounds to exactly 1.0 in float32
    passes = PixelPasses(make_stream(z, torch.tensor([0])), num_classes=3, ignore_index=None,
                         dtype=torch.float32)
    stats = grid_statistics(passes, [1.0], num_bins=15)
    assert stats['count'][0, -1] == 1 and stats['count'].sum() == 1


@pytest.mark.parametrize('method', ['nll', 'grid'])
def test_streaming_equals_full_batch(method, synth):
    z, y = synth.calibrated_maps(6, 5, 12, 12, seed=5, ignore_frac=0.2)
    full = TemperatureScaling(num_classes=5, method=method).fit(z * 2.0, y)
    stream = TemperatureScaling(num_classes=5, method=method).fit(synth.batches_of(z * 2.0, y, size=2))
    listed = TemperatureScaling(num_classes=5, method=method).fit(list(synth.batches_of(z * 2.0, y, size=4)()))
    assert stream.fit_info['num_images'] == 6
    for other in (stream, listed):
        assert other.fit_info['temperature'] == pytest.approx(full.fit_info['temperature'], rel=1e-12)


def test_ignored_pixels_have_no_effect(synth):
    z, y = synth.calibrated_maps(4, 5, 10, 10, seed=6, ignore_frac=0.3)
    noisy = z.clone()
    noisy.movedim(1, -1)[y == synth.IGNORE] = 50.0  # garbage where ignored
    fitted = TemperatureScaling(num_classes=5).fit(noisy * 2.0, y)
    keep = y != synth.IGNORE
    flat = TemperatureScaling(num_classes=5).fit((z * 2.0).movedim(1, -1)[keep], y[keep])
    assert fitted.fit_info['num_pixels'] == int(keep.sum())
    assert fitted.fit_info['temperature'] == pytest.approx(flat.fit_info['temperature'], rel=1e-12)


def test_subsampling_is_reproducible_and_cache_is_equivalent(synth):
    z, y = synth.calibrated_maps(6, 5, 16, 16, seed=7, ignore_frac=0.1)
    source = synth.batches_of(z * 2.0, y, size=3)

    def fit(seed, cache):
        return TemperatureScaling(num_classes=5).fit(source, max_pixels_per_image=50, cache=cache,
                                                     generator=torch.Generator().manual_seed(seed))

    a, b, c = fit(0, False), fit(0, True), fit(1, False)
    assert a.fit_info['num_pixels'] == 6 * 50
    assert a.fit_info['temperature'] == pytest.approx(b.fit_info['temperature'], rel=1e-12)
    assert a.fit_info['temperature'] != c.fit_info['temperature']
    with pytest.raises(ValueError, match='generator'):
        TemperatureScaling(num_classes=5).fit(source, max_pixels_per_image=50)
    with pytest.raises(ValueError, match='max_pixels_per_image'):
        TemperatureScaling(num_classes=5).fit(source, max_pixels_per_image=0, generator=torch.Generator())


def test_bounded_search_ends_at_bound(synth):
    z, y = synth.calibrated_pixels(2000, 3, seed=8)
    with pytest.warns(RuntimeWarning, match='at or beyond t_max'):
        ts = TemperatureScaling(num_classes=3, t_min=0.5, t_max=2.0).fit(z * 10.0, y, ignore_index=None)
    assert ts.temperature.item() == pytest.approx(2.0, rel=1e-6)
    assert ts.fit_info['converged'] and ts.fit_info['at_bound'] == 't_max'


def test_unfitted_and_invalid_inputs(synth):
    ts = TemperatureScaling(num_classes=3)
    assert not ts.fitted and 'unfitted' in repr(ts)
    with pytest.raises(RuntimeError, match='not fitted'):
        ts(torch.zeros(2, 3))
    z, y = synth.calibrated_pixels(100, 3)
    with pytest.raises(ValueError, match='do not match'):
        ts.fit(z, y[:50])
    with pytest.raises(ValueError, match='NaN or infinite'):
        ts.fit(torch.where(z > 2, torch.tensor(float('nan')), z), y)
    with pytest.raises(ValueError, match='num_classes=3'):
        ts.fit(torch.zeros(10, 4), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=r'outside \[0, 3\)'):
        ts.fit(z, torch.full((100,), 7))
    with pytest.raises(ValueError, match='integer'):
        ts.fit(z, y.float())
    with pytest.raises(ValueError, match='no labelled pixels'):
        ts.fit(z, torch.full((100,), synth.IGNORE))
    with pytest.raises(ValueError, match='one-shot'):
        ts.fit(iter([(z, y)]))
    with pytest.raises(ValueError, match='labels is required'):
        ts.fit(z)
    for kwargs, name in [({'method': 'lbfgs'}, 'method'), ({'grid_metric': 'mce'}, 'grid_metric'),
                         ({'t_min': 2.0, 't_max': 1.0}, 't_min'), ({'grid': [1.0, -1.0]}, 'grid'),
                         ({'num_classes': 0}, 'num_classes')]:
        with pytest.raises(ValueError, match=name):
            TemperatureScaling(**{'num_classes': 3, **kwargs})
    ts.fit(z, y)
    with pytest.raises(ValueError, match='num_classes=3'):
        ts(torch.zeros(2, 4, 5, 5))
    with pytest.raises(ValueError, match='NaN or infinite'):
        ts(torch.full((2, 3), math.inf))


def test_state_dict_round_trip(synth):
    z, y = synth.calibrated_pixels(3000, 4, seed=9)
    ts = TemperatureScaling(num_classes=4).fit(z * 0.6, y)
    other = TemperatureScaling(num_classes=4)
    other.load_state_dict(ts.state_dict())
    assert other.fitted and other.temperature.item() == ts.temperature.item()
    assert f'T={ts.temperature.item():.4f}' in other.describe()
