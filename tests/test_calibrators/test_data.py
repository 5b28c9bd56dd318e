import pytest
import torch

from calibseg.calibrators.data import PixelPasses, make_stream, select_pixels


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


def test_select_pixels_against_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(4, 5, 6, generator=g)
    y = torch.randint(0, 4, (5, 6), generator=g)
    y[y == 3] = 255
    zs, ys = select_pixels(z, y, ignore_index=255)
    rows = [(z[:, i, j], y[i, j]) for i in range(5) for j in range(6) if y[i, j] != 255]  # memory order
    assert torch.equal(zs, torch.stack([r[0] for r in rows])) and ys.tolist() == [int(r[1]) for r in rows]
    picked, labels = select_pixels(z, y, ignore_index=255, max_pixels=7, generator=torch.Generator().manual_seed(1))
    again, _ = select_pixels(z, y, ignore_index=255, max_pixels=7, generator=torch.Generator().manual_seed(1))
    assert picked.shape == (7, 4) and torch.equal(picked, again) and (labels != 255).all()
    # the kept pixels are a subset of the labelled ones, in memory order
    positions = [next(k for k, r in enumerate(rows) if torch.equal(r[0], p)) for p in picked]
    assert positions == sorted(positions) and len(set(positions)) == 7
    assert select_pixels(z, y, ignore_index=None)[0].shape == (30, 4)
    with pytest.raises(ValueError, match='Generator'):
        select_pixels(z, y, ignore_index=255, max_pixels=2)


def test_allow_empty_passes():
    passes = PixelPasses(lambda: iter([(torch.zeros(3, 2), torch.full((3,), 255))]), num_classes=2,
                         ignore_index=255, allow_empty=True)
    assert list(passes) == [] and passes.num_pixels == 0
