r"""The refined confidence grid on which calibseg accumulates its calibration statistics.

A confidence :math:`c \in [0, 1]` is mapped to one *fine cell*; every statistic is a sum over the pixels of
a fine cell, so metrics are computed from ``O(cells)`` numbers whatever the number of pixels.

**Base grid.** ``G = 3000`` uniform cells; the base cell of ``c`` is ``ceil(c * G) - 1`` (``c = 0`` goes to
cell 0), i.e. cell ``j`` is ``(j/G, (j+1)/G]``. ``c * G`` is computed in float64, which is exact for float32,
float16 and bfloat16 confidences (24 + 12 bits < 53), so the cell is exact. ``3000 = 2^3 * 3 * 5^3`` is a
multiple of every bin count in ``(5, 10, 15, 20, 25, 50, 100, 200, 500)``: the equal-width bin of ``c`` among
``B`` bins, ``ceil(c * B) - 1``, is ``floor(j * B / G)`` for base cell ``j``, so equal-width binned metrics
computed from grid sums are *exact*.

**Refined end cells.** Float32 softmax saturates (many pixels at exactly 1.0) and class-wise probabilities
mostly sit near 0, so the two end cells are split further, for equal-mass quantiles and the kernel metrics:

* base cell 0, ``[0, 1/G]``, is split into an *exact-zero* sub-cell (``c == 0``), ``OCTAVES * SUBCELLS``
  log-spaced sub-cells and one *tiny* sub-cell holding everything below them;
* base cell ``G - 1``, ``(1 - 1/G, 1]``, is split the same way on ``s = 1 - c`` (exact in float32 for
  ``c >= 1/2``): an *exact-one* sub-cell (``c == 1``), the log-spaced sub-cells of ``s`` and a tiny one.

The log-spaced sub-cells are read off the float32 bit pattern: with ``bits`` the IEEE-754 bits of a
non-negative float32 ``v`` (an integer increasing with ``v``), the code ``q(v) = ceil(bits / 2**18)`` is 0
for ``v == 0`` and otherwise numbers slices ``(v_{q-1}, v_q]`` that split every binary octave
``[2^e, 2^{e+1}]`` into ``SUBCELLS = 2**5 = 32`` equal-width slices (relative width ``<= 1/32``).
``OCTAVES = 48`` octaves of codes are kept below the code of the largest float32 ``<= 1/G`` (so sub-cells
reach down to ``~1.2e-18``); the tiny sub-cell holds ``0 < v <= 1.19e-18``. The top log sub-cell is cut at
``1/G``, so every sub-cell lies inside exactly one base cell, and summing the fine cells of each base cell
gives the base grid.

Fine cells are numbered in increasing order of confidence::

    0                       exact zero               c == 0
    1                       tiny                     0 < c <= 1.19e-18
    2 .. 1537               log sub-cells of c       ... <= c <= 1/G
    1538 .. 4535            base cells 1 .. G-2      (j/G, (j+1)/G]
    4536 .. 6071            log sub-cells of 1 - c   1 - 1/G < c < 1 - 1.19e-18
    6072                    tiny of 1 - c            1 - 1.19e-18 <= c < 1
    6073                    exact one                c == 1

(6074 cells). For float32 inputs ``1 - c`` is a multiple of ``2^-24`` near 1, so only the top ~13 octaves of the
high side can be populated (each of their slices then holds at most a few distinct values); the deeper ones
serve float64 inputs. Float64 confidences get their base cell from a float64 product (possibly misplaced within one
ulp of a cell edge) and their sub-cell from the float32 rounding of ``c`` or ``1 - c``.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ['CalibrationGrid', 'DEFAULT_GRID']

_SHIFT = 18  # 23 mantissa bits - 5 sub-cell bits: ceil(bits / 2**18) numbers 1/32-octave slices
_LUT_SHIFT = 12  # lookup-table buckets of 2**12 consecutive float32 bit patterns
_ONE_BITS = 0x3F800000  # float32 bits of 1.0
_LUTS: Dict[Tuple[Tuple[int, int, int], str], Optional[Tensor]] = {}


def _code(v: np.ndarray) -> np.ndarray:
    """``ceil(bits / 2**18)`` of non-negative float32 values (numpy, for the constants)."""
    bits = np.asarray(v, dtype=np.float32).view(np.int32).astype(np.int64)
    return (bits + (1 << _SHIFT) - 1) >> _SHIFT


def _code_upper(q: np.ndarray) -> np.ndarray:
    """Largest value (as float64) of the float32 slice with code ``q`` (``q >= 0``)."""
    return (np.asarray(q, dtype=np.int64) << _SHIFT).astype(np.int32).view(np.float32).astype(np.float64)


def _largest_float32_at_most(x: float) -> np.float32:
    """Largest float32 ``v`` with ``v <= x`` (``x`` a positive float64 given as ``numerator / G``)."""
    v = np.float32(x)
    while float(v) > x:
        v = np.nextafter(v, np.float32(0))
    return v


def _buffer(workspace: Optional[Dict[str, Tensor]], key: str, shape: torch.Size, dtype: torch.dtype,
            device: torch.device) -> Tensor:
    """A tensor of ``shape``: a view of a cached buffer when ``workspace`` is a dict, else a new one."""
    if workspace is None:
        return torch.empty(shape, dtype=dtype, device=device)
    numel = 1
    for d in shape:
        numel *= d
    buf = workspace.get(key)
    if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != torch.device(device):
        buf = torch.empty(numel, dtype=dtype, device=device)
        workspace[key] = buf
    return buf[:numel].view(shape)


@dataclass(frozen=True)
class CalibrationGrid:
    """Refined uniform grid over ``[0, 1]`` (see the module docstring).

    Args:
        base_cells: ``G``, number of uniform base cells; a multiple of every equal-width bin count used.
        octaves: number of binary octaves of log-spaced sub-cells in each end cell.
        subcell_bits: ``log2`` of the number of linear sub-cells per octave (read off the float32 bits).

    Attributes:
        n_cells: number of fine cells.
        n_low: number of fine cells inside base cell 0 (the same number inside base cell ``G - 1``).
        lower, upper: ``(n_cells,)`` float64 edges of the fine cells (a cell holds ``lower <= c <= upper``;
            equal-width base cells are ``(lower, upper]``).
        base_id: ``(n_cells,)`` int64 base cell of every fine cell (non-decreasing).
        single_valued: ``(n_cells,)`` bool, True for the exact-zero and exact-one cells.
    """

    base_cells: int = 3000
    octaves: int = 48
    subcell_bits: int = 5
    n_cells: int = field(init=False)
    n_low: int = field(init=False)
    lower: Tensor = field(init=False, repr=False, compare=False)
    upper: Tensor = field(init=False, repr=False, compare=False)
    base_id: Tensor = field(init=False, repr=False, compare=False)
    single_valued: Tensor = field(init=False, repr=False, compare=False)
    _q_lo: int = field(init=False, repr=False)
    _q_top: int = field(init=False, repr=False)
    _low32: float = field(init=False, repr=False)
    _high32: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.subcell_bits != 23 - _SHIFT:
            raise ValueError(f'subcell_bits must be {23 - _SHIFT}, got {self.subcell_bits}')
        if not (isinstance(self.base_cells, int) and 3 <= self.base_cells <= 2**20):
            raise ValueError(f'base_cells must be an integer in [3, 2**20], got {self.base_cells!r}')
        if not (isinstance(self.octaves, int) and 1 <= self.octaves <= 100):
            raise ValueError(f'octaves must be an integer in [1, 100], got {self.octaves!r}')
        g = self.base_cells
        low32 = _largest_float32_at_most(1.0 / g)
        while float(low32) * g > 1.0:  # make the bound exact: float32 * G is exact in float64
            low32 = np.nextafter(low32, np.float32(0))
        high32 = low32 if float(low32) * g < 1.0 else np.nextafter(low32, np.float32(0))
        q_top = int(_code(low32))
        n_sub = self.octaves << self.subcell_bits
        q_lo = q_top - n_sub + 1
        if q_lo < 2:
            raise ValueError(f'octaves={self.octaves} reaches below the float32 range')
        n_low = 2 + n_sub
        n_cells = 2 * n_low + g - 2
        # edges of the low cells: zero, tiny, codes q_lo .. q_top
        codes = np.arange(q_lo, q_top + 1)
        low_lower = np.concatenate([[0.0, 0.0], _code_upper(codes - 1)])
        low_upper = np.concatenate([[0.0, _code_upper(q_lo - 1)], _code_upper(codes)])
        low_upper[-1] = min(low_upper[-1], 1.0 / g)
        mid = np.arange(1, g - 1, dtype=np.float64)
        lower = np.concatenate([low_lower, mid / g, (1.0 - low_upper)[::-1]])
        upper = np.concatenate([low_upper, (mid + 1) / g, (1.0 - low_lower)[::-1]])
        base_id = np.concatenate([np.zeros(n_low, np.int64), np.arange(1, g - 1), np.full(n_low, g - 1)])
        single = np.zeros(n_cells, dtype=bool)
        single[0] = single[-1] = True
        object.__setattr__(self, 'n_cells', int(n_cells))
        object.__setattr__(self, 'n_low', int(n_low))
        object.__setattr__(self, 'lower', torch.from_numpy(lower))
        object.__setattr__(self, 'upper', torch.from_numpy(upper))
        object.__setattr__(self, 'base_id', torch.from_numpy(base_id))
        object.__setattr__(self, 'single_valued', torch.from_numpy(single))
        object.__setattr__(self, '_q_lo', int(q_lo))
        object.__setattr__(self, '_q_top', q_top)
        object.__setattr__(self, '_low32', float(low32))
        object.__setattr__(self, '_high32', float(high32))

    # ------------------------------------------------------------------------------------------------
    def index(self, confidences: Tensor) -> Tensor:
        """Fine cell of every confidence.

        Args:
            confidences: floating tensor of any shape with values in ``[0, 1]`` (not checked).

        Returns:
            int64 tensor of the same shape, values in ``[0, n_cells)``.
        """
        if not confidences.is_floating_point():
            raise ValueError(f'confidences must be a floating tensor, got dtype {confidences.dtype}')
        return self.index_and_double(confidences)[0].long()

    def index_and_double(self, confidences: Tensor, *, last_cell: bool = True,
                         workspace: Optional[Dict[str, Tensor]] = None, tag: str = '') -> Tuple[Tensor, Tensor]:
        """Fine cell (int32) and the float64 copy of ``confidences`` (reused as bincount weights).

        Branch-free (no value is read back to the host): with ``k = ceil(c * G)`` (exact in float64), the cell is
        ``max(min(low(c), n_low - 1), min(k + n_low - 2, (k - 1) * n), min(n - 1 - low(1 - c), (k - G + 1) * n))``
        where ``low`` is the index among the low cells read off the float32 bits and ``n = n_cells``: the
        second term is negative for ``k <= 1`` (base cell 0), the third for ``k < G`` (not the last base cell).

        Args:
            confidences: floating tensor with values in ``[0, 1]`` (others give unspecified indices).
            last_cell: ``False`` skips the third term: confidences in the last base cell then get the index of
                its first fine cell (for non-top-label probabilities, which are ``<= 1/2``).
            workspace: optional dict of reusable buffers; the returned tensors then live in it and are
                overwritten by the next call with the same workspace and ``tag``.
            tag: prefix of this call's buffer names in ``workspace`` (calls with different tags do not share).
        """
        shape = confidences.shape
        dev = confidences.device
        exact = confidences.dtype != torch.float64
        c32 = confidences.float()
        if exact:
            c64 = _buffer(workspace, tag + 'c64', shape, torch.float64, dev).copy_(confidences)
        else:
            c64 = confidences.contiguous()
        g, n_low, n = self.base_cells, self.n_low, self.n_cells
        t64 = torch.mul(c64, g, out=_buffer(workspace, tag + 't64', shape, torch.float64, dev)).ceil_()
        k = _buffer(workspace, tag + 'k', shape, torch.int32, dev).copy_(t64)
        out = self._low_code_index(c32, _buffer(workspace, tag + 'out', shape, torch.int32, dev),
                                   _buffer(workspace, tag + 'tmp', shape, torch.int32, dev))
        out.clamp_max_(n_low - 1)
        mid = torch.add(k, n_low - 2, out=_buffer(workspace, tag + 'tmp', shape, torch.int32, dev))
        torch.minimum(mid, k.sub_(1).mul_(n), out=mid)
        torch.maximum(out, mid, out=out)
        if last_cell:  # k was turned into (k - 1) * n above
            if exact:
                s32 = torch.neg(c32, out=_buffer(workspace, tag + 's32', shape, torch.float32, dev)).add_(1.0)
            else:
                s64 = torch.neg(c64, out=t64).add_(1.0)
                s32 = _buffer(workspace, tag + 's32', shape, torch.float32, dev).copy_(s64)
            # 1 - c is exact (Sterbenz) where the third term is used
            high = self._low_code_index(s32, _buffer(workspace, tag + 'high', shape, torch.int32, dev),
                                        _buffer(workspace, tag + 'tmp', shape, torch.int32, dev))
            if not exact:
                high.clamp_max_(n_low - 1)
            high.neg_().add_(n - 1)
            # (k - 1) * n - (G - 2) * n = (k - G + 1) * n
            torch.minimum(high, k.sub_((g - 2) * n), out=high)
            torch.maximum(out, high, out=out)
        return out, c64

    def _lookup_table(self, device: torch.device) -> Optional[Tensor]:
        """The table of :meth:`index_below_last_cell` on ``device`` (built once per process from
        :meth:`index_and_double`), or ``None`` when a bucket of ``2**12`` float32 bit patterns holds two cell
        edges (then the arithmetic path is used)."""
        key = (self.state(), str(device))
        if key not in _LUTS:
            table = self._build_lookup_table()
            _LUTS[key] = None if table is None else table.to(device)
        return _LUTS[key]

    def _build_lookup_table(self) -> Optional[Tensor]:
        span = 1 << _LUT_SHIFT
        if self.n_cells >= 1 << (31 - _LUT_SHIFT - 1):
            return None
        start = torch.arange((_ONE_BITS >> _LUT_SHIFT) + 1, dtype=torch.int64) << _LUT_SHIFT

        def cells(offset: Tensor) -> Tensor:
            bits = (start + offset).clamp_max(_ONE_BITS).to(torch.int32)
            return self.index_and_double(bits.view(torch.float32), last_cell=False)[0].long()

        first = cells(torch.zeros_like(start))
        last = cells(torch.full_like(start, span - 1))
        if int((last - first).max()) > 1:
            return None
        lo, hi = torch.zeros_like(start), torch.full_like(start, span - 1)
        for _ in range(_LUT_SHIFT + 1):  # largest offset still in the first cell of the bucket
            mid = (lo + hi + 1) // 2
            same = cells(mid) == first
            lo, hi = torch.where(same, mid, lo), torch.where(same, hi, mid - 1)
        threshold = torch.where(last > first, lo, torch.full_like(lo, span - 1))
        # entry + b = first * T + (T - 1 - t) + (b mod T) (T = 2**12): its quotient by T is first + [b mod T > t]
        return (first * span + (span - 1 - threshold) - start).to(torch.int32)

    def index_below_last_cell(self, confidences: Tensor, *, workspace: Optional[Dict[str, Tensor]] = None,
                              tag: str = '', out: Optional[Tensor] = None) -> Tensor:
        """:meth:`index_and_double` with ``last_cell=False`` (int32) of float32 values, by table lookup.

        The fine cell is a non-decreasing function of the float32 bit pattern ``b``; every bucket of ``T = 2**12``
        consecutive patterns holds at most one cell edge, after the ``t``-th pattern of the bucket, so with the
        bucket's first cell ``f`` the cell is ``f + [b mod T > t]``. The table stores
        ``e = f T + (T - 1 - t) - T floor(b / T)`` per bucket, and ``(e + b) // T`` is that cell: a clamp, two shifts,
        an add and one table gather (``~4x`` faster than the float64 arithmetic on CPU). Values outside ``[0, 1]``
        (NaN included) are clamped first, so they get a valid cell. Falls back to :meth:`index_and_double` for grids
        whose buckets hold two edges and for other dtypes. ``out``: an int32 tensor of the input's shape to write
        the cells into (any strides).
        """
        table = self._lookup_table(confidences.device) if confidences.dtype == torch.float32 else None
        if table is None:
            cells = self.index_and_double(confidences, last_cell=False, workspace=workspace, tag=tag)[0]
            return cells if out is None else out.copy_(cells)
        shape, dev = confidences.shape, confidences.device
        bits = torch.clamp(confidences.view(torch.int32), 0, _ONE_BITS,
                           out=_buffer(workspace, tag + 'bits', shape, torch.int32, dev))
        key = torch.bitwise_right_shift(bits, _LUT_SHIFT, out=_buffer(workspace, tag + 'key', shape, torch.int32,
                                                                        dev))
        entry = _buffer(workspace, tag + 'entry', shape, torch.int32, dev)
        torch.index_select(table, 0, key.view(-1), out=entry.view(-1))
        entry.add_(bits)
        if out is None:
            return entry.bitwise_right_shift_(_LUT_SHIFT)
        return torch.bitwise_right_shift(entry, _LUT_SHIFT, out=out)

    def _low_code_index(self, v32: Tensor, out: Tensor, tmp: Tensor) -> Tensor:
        """Index among the low cells (zero, tiny, log sub-cells) of float32 values ``v >= 0``, into ``out``.

        Exact for ``v <= 1/G``; larger values get indices ``>= n_low - 1``.
        """
        q = torch.add(v32.view(torch.int32), (1 << _SHIFT) - 1, out=out).bitwise_right_shift_(_SHIFT)
        # q == 0 -> 0 (zero); 0 < q < q_lo -> 1 (tiny); q >= q_lo -> 2 + q - q_lo
        t = torch.sub(q, self._q_lo - 2, out=tmp).clamp_min_(1)
        return torch.minimum(q, t, out=q)

    def bin_of_cells(self, n_bins: int) -> Tensor:
        """Equal-width bin (``(n_bins,)`` bins, ``ceil(c*B) - 1`` rule) of every fine cell (int64)."""
        if not isinstance(n_bins, int) or n_bins < 1 or self.base_cells % n_bins:
            raise ValueError(f'n_bins must be a positive divisor of base_cells={self.base_cells} for exact '
                             f'equal-width bins, got {n_bins!r}')
        return self.base_id * n_bins // self.base_cells

    def state(self) -> Tuple[int, int, int]:
        """The constants that define the grid (for compatibility checks and state dicts)."""
        return (self.base_cells, self.octaves, self.subcell_bits)


DEFAULT_GRID = CalibrationGrid()
