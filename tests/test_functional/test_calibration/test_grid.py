import numpy as np
import pytest
import torch

from calibseg.functional.calibration.grid import DEFAULT_GRID, CalibrationGrid

G = DEFAULT_GRID.base_cells
DIVISORS = (5, 10, 15, 20, 25, 50, 100, 200, 500)


def edge_values() -> torch.Tensor:
    """Float32 values at and next to every base-cell edge j/G, both ends, and the float32 extremes."""
    j = np.arange(G + 1, dtype=np.float64) / G
    near = np.float32(j)
    vals = np.concatenate([near, np.nextafter(near, np.float32(0)), np.nextafter(near, np.float32(2)),
                           [0.0, 1.0, 1e-45, 1e-38, 1e-20, 2.0 ** -60, 2.0 ** -61, 0.5, 1 - 2.0 ** -24,
                            1 - 2.0 ** -23, 1 - 1e-4, 3e-4]]).astype(np.float32)
    return torch.from_numpy(np.clip(vals, 0, 1))


def random_values(n=200_000, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=gen)
    tiny = torch.exp(-torch.rand(n, generator=gen) * 80) / G  # log-uniform inside base cell 0
    return torch.cat([u, tiny, 1 - tiny]).float().clamp(0, 1)


def test_layout_and_edges():
    g = DEFAULT_GRID
    assert g.n_cells == 2 * g.n_low + G - 2 == 6074
    assert g.n_low == 2 + 48 * 32
    lo, up = g.lower.numpy(), g.upper.numpy()
    assert np.all(lo <= up) and np.all(np.diff(lo) >= 0) and np.all(np.diff(up) >= 0)
    assert np.all(lo[1:] <= up[:-1] + 1e-300)  # no gaps between consecutive cells
    assert lo[0] == up[0] == 0.0 and lo[-1] == up[-1] == 1.0
    assert g.single_valued.sum() == 2 and g.single_valued[0] and g.single_valued[-1]
    # base ids are non-decreasing, each base cell nests its fine cells
    base = g.base_id.numpy()
    assert np.all(np.diff(base) >= 0) and base[0] == 0 and base[-1] == G - 1
    assert np.array_equal(np.unique(base), np.arange(G))
    assert np.all(lo >= base / G - 1e-15) and np.all(up <= (base + 1) / G + 1e-15)
    # log sub-cells: relative width <= 1/32 (the octave slices), tiny cells reach ~2^-60
    sub = slice(2, g.n_low)
    assert np.all((up[sub] - lo[sub]) <= up[sub] / 32 + 1e-30)
    assert up[1] < 2.0 ** -59


@pytest.mark.parametrize('values', [edge_values(), random_values()], ids=['edges', 'random'])
def test_index_nests_in_exact_base_cells(values):
    g = DEFAULT_GRID
    idx = g.index(values)
    c = values.double()
    assert idx.dtype == torch.int64
    assert bool(((c >= g.lower[idx]) & (c <= g.upper[idx])).all())
    base = torch.clamp(torch.ceil(c * G) - 1, min=0).long()
    assert torch.equal(g.base_id[idx], base)
    order = torch.argsort(c)
    assert bool((torch.diff(idx[order]) >= 0).all())  # monotone in the confidence
    for b in DIVISORS:  # equal-width bins are exact unions of base cells
        want = torch.clamp(torch.ceil(c * b) - 1, min=0).long()
        assert torch.equal(g.bin_of_cells(b)[idx], want)


def test_exact_zero_and_one_cells():
    g = DEFAULT_GRID
    idx = g.index(torch.tensor([0.0, 1.0, 1e-45, 1.0 - 2 ** -24]))
    assert idx.tolist()[:2] == [0, g.n_cells - 1]
    assert idx[2] == 1  # the smallest subnormal is tiny, not zero
    assert 0 < idx[3] < g.n_cells - 1 and g.base_id[idx[3]] == G - 1
    for b in DIVISORS:
        bins = g.bin_of_cells(b)[idx[:2]]
        assert bins.tolist() == [0, b - 1]  # 0 in the first bin, 1.0 in the last


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    g = DEFAULT_GRID
    vals = torch.cat([edge_values(), random_values(20000)]).to(dtype)
    idx = g.index(vals)
    c = vals.double()
    assert bool(((c >= g.lower[idx] - 1e-12) & (c <= g.upper[idx] + 1e-12)).all())
    base = torch.clamp(torch.ceil(c * G) - 1, min=0).long()
    assert torch.equal(g.base_id[idx], base)


def test_last_cell_shortcut_and_workspace():
    g = DEFAULT_GRID
    vals = torch.cat([edge_values(), random_values(5000)])
    full = g.index_and_double(vals)[0]
    low = vals <= 0.5
    short = g.index_and_double(vals, last_cell=False)[0]
    assert torch.equal(full[low], short[low])
    ws = {}
    a = g.index_and_double(vals, workspace=ws)[0].clone()
    b, c64 = g.index_and_double(vals.flip(0), workspace=ws)
    assert torch.equal(a, full) and torch.equal(b, full.flip(0)) and torch.equal(c64, vals.flip(0).double())


def test_grid_is_frozen_and_validated():
    g = CalibrationGrid()
    assert g == DEFAULT_GRID and g.state() == (3000, 48, 5)
    import dataclasses
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.base_cells = 10
    with pytest.raises(ValueError, match='subcell_bits'):
        CalibrationGrid(subcell_bits=4)
    with pytest.raises(ValueError, match='octaves'):
        CalibrationGrid(octaves=0)
    with pytest.raises(ValueError, match='divisor'):
        g.bin_of_cells(7)
    with pytest.raises(ValueError, match='floating'):
        g.index(torch.tensor([0, 1]))
    small = CalibrationGrid(base_cells=60, octaves=4)
    vals = random_values(1000)
    idx = small.index(vals)
    assert torch.equal(small.base_id[idx], torch.clamp(torch.ceil(vals.double() * 60) - 1, min=0).long())


def test_lookup_table_equals_the_arithmetic_cells():
    g = DEFAULT_GRID
    vals = torch.cat([edge_values(), random_values(100_000, seed=3)])
    vals = vals[vals <= 0.5]  # where the shortcut is used: non-top-label probabilities
    want = g.index_and_double(vals, last_cell=False)[0]
    assert torch.equal(g.index_below_last_cell(vals), want)
    # every float32 pattern of the first 2**22 (zero, tiny, the log sub-cells) and of the top of [0, 1]
    for lo, hi in ((0, 1 << 22), (0x3F000000 - (1 << 22), 0x3F800000 + 1)):
        v = torch.arange(lo, hi, dtype=torch.int32).view(torch.float32)
        assert torch.equal(g.index_below_last_cell(v), g.index_and_double(v, last_cell=False)[0])
    ws = {}
    m = vals.numel() // 4 * 4
    a = g.index_below_last_cell(vals[:m].view(4, -1), workspace=ws, tag='t')
    assert a.shape == (4, m // 4) and torch.equal(a.view(-1), want[:m])
    # values outside [0, 1] (NaN, inf, negative) still get a valid cell
    odd = g.index_below_last_cell(torch.tensor([float('nan'), float('inf'), -float('inf'), -1.0, 2.0, -0.0]))
    assert bool(((odd >= 0) & (odd < g.n_cells)).all())
    # float64 and grids whose buckets hold two edges fall back to the arithmetic path
    assert torch.equal(g.index_below_last_cell(vals.double()), g.index_and_double(vals.double(), last_cell=False)[0])
    fine = CalibrationGrid(base_cells=2 ** 20, octaves=2)
    assert fine._lookup_table(torch.device('cpu')) is None
    assert torch.equal(fine.index_below_last_cell(vals), fine.index_and_double(vals, last_cell=False)[0])
    small = CalibrationGrid(base_cells=60, octaves=4)
    assert small._lookup_table(torch.device('cpu')) is not None
    assert torch.equal(small.index_below_last_cell(vals), small.index_and_double(vals, last_cell=False)[0])
