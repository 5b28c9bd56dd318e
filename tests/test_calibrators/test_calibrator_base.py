import ast
import math
import pathlib

import pytest
import torch

import calibseg.calibrators as calibrators
from calibseg.calibrators.base import PixelPasses, make_stream, newton_inverse_temperature


def test_no_openmmlab_import():
    """The calibrators are the pure-PyTorch layer: no mm* package may be imported."""
    for path in pathlib.Path(calibrators.__file__).parent.glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or '']
            for name in names:
                assert not name.split('.')[0].startswith('mm'), f'{path.name} imports {name}'


def test_sources_and_passes(synth):
    z, y = synth.calibrated_maps(5, 3, 4, 4, seed=71, ignore_frac=0.25)
    keep = int((y != 255).sum())
    sources = [make_stream(z, y), make_stream((z, y)), make_stream(synth.batches_of(z, y, size=2)),
               make_stream([(z[:3], y[:3]), (z[3:], y[3:])])]
    for stream in sources:
        passes = PixelPasses(stream, num_classes=3, ignore_index=255, chunk_pixels=7)
        for _ in range(2):
            chunks = list(passes)
            assert all(c[0].shape[0] <= 7 and c[0].dtype == torch.float64 for c in chunks)
            assert sum(c[1].numel() for c in chunks) == keep
        assert passes.num_pixels == keep and passes.num_images == 5 and passes.passes == 2
        assert passes.class_counts.sum() == keep
    with pytest.raises(ValueError, match='labels/images'):
        make_stream(synth.batches_of(z, y, size=2), y)
    with pytest.raises(ValueError, match='data must be'):
        make_stream(3)


def test_source_must_be_deterministic(synth):
    z, y = synth.calibrated_maps(4, 3, 4, 4, seed=72)
    calls = []

    def changing():
        calls.append(1)
        return iter([(z[:len(calls)], y[:len(calls)])])

    passes = PixelPasses(changing, num_classes=3, ignore_index=255)
    list(passes)
    with pytest.raises(ValueError, match='same data on every call'):
        list(passes)


def test_bad_batches():
    passes = PixelPasses(lambda: iter([torch.zeros(2, 3)]), num_classes=3, ignore_index=255)
    with pytest.raises(ValueError, match='batch 0'):
        list(passes)


def test_newton_on_quadratic_and_bounds():
    # f(beta) = (beta - 0.25)^2 has its minimiser at T = 4 (one Newton step from any start).
    beta, info = newton_inverse_temperature(lambda b: ((b - 0.25) ** 2, 2 * (b - 0.25), 2.0), t_min=0.01,
                                            t_max=100.0)
    assert beta == pytest.approx(0.25) and info['converged'] and info['passes'] <= 3
    beta, info = newton_inverse_temperature(lambda b: ((b - 0.25) ** 2, 2 * (b - 0.25), 2.0), t_min=0.5,
                                            t_max=2.0)
    assert beta == pytest.approx(0.5, rel=1e-6)  # T = 4 is outside [0.5, 2]: ends at t_max
    beta, _ = newton_inverse_temperature(lambda b: (math.exp(b), math.exp(b), math.exp(b)), t_min=0.1, t_max=10.0)
    assert beta == pytest.approx(0.1, rel=1e-6)  # increasing objective: the smallest beta
