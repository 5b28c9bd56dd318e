r"""Calibration against the distance to the nearest label boundary (streaming, fixed-size float64 statistics).

**Distance contract.** In each label map the *valid* pixels are those whose label is not ``ignore_index``. A
*boundary pixel* is a valid pixel with at least one 4-connected neighbour inside the image whose label differs
from its own (an ignored neighbour counts as different; the image border does not). The *distance* of a valid
pixel is the Euclidean distance, in pixels of the label map, from its centre to the nearest boundary pixel's
centre: 0 on boundary pixels, ``inf`` for every pixel of a map without boundary pixels. It is computed by
OpenCV's exact distance transform (``cv2.distanceTransform`` with ``DIST_L2`` and ``DIST_MASK_PRECISE``, the
Felzenszwalb–Huttenlocher algorithm) as float32; a distance ``sqrt(m)`` (``m`` an integer) compares exactly
with integer band edges. Ignored pixels get NaN (they are never evaluated).

**Bands.** Increasing edges ``e_1 < ... < e_m`` define ``m + 1`` bands ``d <= e_1``, ``e_1 < d <= e_2``, ...,
``d > e_m`` (``inf`` falls in the last). With ``boundary_width = w`` the *boundary* pixels of the metric are
those with ``d <= w`` and the *interior* ones those with ``d > w`` (local temperature scaling, Ding et al.,
ICCV 2021, reports ECE within 2 px of a label change; selective scaling, Wang et al., CVPR 2023, compares
boundary and interior pixels).

**Statistics.** Per band and per equal-width confidence bin (15 by default, ``(b/B, (b+1)/B]``, ``c = 0`` in the
first bin, bin of ``c`` taken from its ``ceil(c * 3000)`` base cell exactly as
:class:`~calibseg.functional.calibration.grid.CalibrationGrid` does, so the bins agree with the pooled ones):
pixel count, ``Σ c_i`` and ``Σ a_i`` of the top-label confidence ``c_i`` and correctness ``a_i``, with the same
conventions as :mod:`.statistics` (softmax in the input dtype, first maximum; one-channel maps: ``c = p`` for a
foreground prediction ``p >= threshold``, ``1 - p`` otherwise). A band's ``ECE_B = Σ_b |Σ a - Σ c| / n_band``.
The float32 softmax runs on other column blocks than the pooled statistics' (its last bit depends on the block
layout), so a band holding every pixel matches the pooled ``ECE_15`` to float32 rounding (~1e-7 relative).
"""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from .inputs import check_input_type, check_labels, check_values, values_ok
from .statistics import _first_argmax

__all__ = ['boundary_pixels', 'boundary_distance', 'SpatialCalibrationStatistics']

_BASE = 3000  # base cells of the calibration grid: bins agree with the pooled statistics


def _label_array(labels: Union[Tensor, np.ndarray]) -> np.ndarray:
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f'a label map must be 2-D (H, W), got shape {arr.shape}')
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f'labels must be integers, got dtype {arr.dtype}')
    return arr


def boundary_pixels(labels: Union[Tensor, np.ndarray], ignore_index: Optional[int] = 255) -> np.ndarray:
    """Boolean ``(H, W)`` map of the boundary pixels of one label map (see the module docstring).

    Example:
        >>> boundary_pixels(np.array([[0, 0, 1], [0, 0, 1]]), 255).astype(int)
        array([[0, 1, 1],
               [0, 1, 1]])
    """
    lab = _label_array(labels)
    valid = np.ones(lab.shape, bool) if ignore_index is None else lab != ignore_index
    edge = np.zeros(lab.shape, bool)
    diff_v = lab[1:, :] != lab[:-1, :]  # differs from the pixel below / above
    diff_h = lab[:, 1:] != lab[:, :-1]
    edge[:-1, :] |= diff_v
    edge[1:, :] |= diff_v
    edge[:, :-1] |= diff_h
    edge[:, 1:] |= diff_h
    return edge & valid


def boundary_distance(labels: Union[Tensor, np.ndarray], ignore_index: Optional[int] = 255) -> np.ndarray:
    """Float64 ``(H, W)`` distance of every valid pixel to the nearest boundary pixel (NaN at ignored pixels).

    Example:
        >>> boundary_distance(np.array([[0, 0, 0, 1], [0, 0, 0, 255]]), 255)
        array([[ 2.,  1.,  0.,  0.],
               [ 2.,  1.,  0., nan]])
    """
    lab = _label_array(labels)
    edge = boundary_pixels(lab, ignore_index)
    if edge.any():
        import cv2  # imported here: importing the calibration core stays light

        dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        out = dist.astype(np.float64)
    else:
        out = np.full(lab.shape, np.inf)
    if ignore_index is not None:
        out[lab == ignore_index] = np.nan
    return out


def _check_edges(edges: Sequence[float]) -> List[float]:
    try:
        values = [float(e) for e in edges]
    except (TypeError, ValueError):
        raise ValueError(f'band edges must be a sequence of numbers, got {edges!r}') from None
    if not values or any(not np.isfinite(e) or e < 0 for e in values) or any(
            b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f'band edges must be finite, non-negative and strictly increasing, got {list(edges)}')
    return values


class SpatialCalibrationStatistics:
    """Top-label calibration statistics per distance band (see the module docstring); additive like
    :class:`~calibseg.functional.calibration.CalibrationStatistics`.

    Args:
        edges: increasing band edges ``e_1 < ... < e_m`` (pixels); ``m + 1`` bands.
        num_classes: ``K`` (2 with ``binary``).
        input_type: ``'logits'`` or ``'probs'``.
        binary: one-channel foreground maps instead of ``K``-channel maps.
        threshold: foreground decision threshold of one-channel maps.
        ignore_index: label of ignored pixels (``None``: none).
        exclude_background: do not evaluate pixels labelled 0 (they still shape the boundaries).
        n_bins: equal-width confidence bins per band (a divisor of 3000).
        chunk_size: pixels processed at a time (temporary memory ~``12 * K * chunk_size`` bytes).

    Example:
        >>> stats = SpatialCalibrationStatistics([1.0], num_classes=3, input_type='logits')
        >>> labels = torch.tensor([[0, 0, 0, 1]] * 2)
        >>> _ = stats.update(torch.randn(3, 2, 4), labels)
        >>> stats.band_counts().tolist()  # two boundary columns and one at distance 1: 6 pixels, 2 at distance 2
        [6.0, 2.0]
    """

    def __init__(self, edges: Sequence[float], *, num_classes: int, input_type: str, binary: bool = False,
                 threshold: float = 0.5, ignore_index: Optional[int] = 255, exclude_background: bool = False,
                 n_bins: int = 15, chunk_size: int = 2**16) -> None:
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f'chunk_size must be a positive integer, got {chunk_size!r}')
        self.chunk_size = chunk_size
        self.edges = _check_edges(edges)
        if not isinstance(num_classes, int) or num_classes < 2 or (binary and num_classes != 2):
            raise ValueError(f'num_classes must be an integer >= 2 (2 for binary maps), got {num_classes!r}')
        if not isinstance(n_bins, int) or n_bins < 1 or _BASE % n_bins:
            raise ValueError(f'n_bins must be a positive divisor of {_BASE}, got {n_bins!r}')
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f'threshold must be in (0, 1), got {threshold!r}')
        self.num_classes = num_classes
        self.input_type = check_input_type(input_type)
        self.binary = bool(binary)
        self.threshold = float(threshold)
        self.ignore_index = ignore_index
        self.exclude_background = bool(exclude_background)
        self.n_bins = n_bins
        self._state = torch.zeros(self.state_size, dtype=torch.float64)

    # ---------------------------------------------------------------- layout
    @property
    def n_bands(self) -> int:
        return len(self.edges) + 1

    @property
    def state_size(self) -> int:
        return self.n_bands * 3 * self.n_bins

    def _view(self) -> Tensor:
        return self._state.view(self.n_bands, 3, self.n_bins)

    count = property(lambda self: self._view()[:, 0], doc='``(bands, bins)`` pixel counts.')
    sum_conf = property(lambda self: self._view()[:, 1], doc='``(bands, bins)`` sums of confidences.')
    sum_correct = property(lambda self: self._view()[:, 2], doc='``(bands, bins)`` numbers of correct pixels.')

    @property
    def num_pixels(self) -> int:
        return int(self._state.view(self.n_bands, 3, self.n_bins)[:, 0].sum())

    def band_counts(self) -> Tensor:
        """``(bands,)`` pixel count per band."""
        return self.count.sum(-1)

    def _config(self) -> dict:
        return dict(edges=self.edges, num_classes=self.num_classes, binary=self.binary, threshold=self.threshold,
                    ignore_index=self.ignore_index, exclude_background=self.exclude_background, n_bins=self.n_bins,
                    input_type=self.input_type)

    # ---------------------------------------------------------------- update
    def _top_label(self, x: Tensor, workspace: dict):
        """Confidence (float64) and prediction (int64) of ``(K, P)`` (or ``(P,)`` binary) inputs."""
        if self.binary:
            p = torch.sigmoid(x) if self.input_type == 'logits' else x
            p32 = p.float()
            fg = p32 >= self.threshold
            return torch.where(fg, p32, 1.0 - p32).double(), fg.long()
        p = torch.softmax(x, dim=0) if self.input_type == 'logits' else x
        if p.dtype in (torch.float16, torch.bfloat16):
            p = p.float()
        conf = p.amax(0)
        return conf.double(), _first_argmax(p, conf, workspace)

    def update(self, inputs: Tensor, labels: Tensor, *, name: Optional[str] = None
               ) -> 'SpatialCalibrationStatistics':
        """Accumulate label maps: ``inputs`` ``(K, H, W)`` with ``labels`` ``(H, W)``, or ``(N, K, H, W)`` with
        ``(N, H, W)`` (binary: ``(H, W)``/``(1, H, W)`` with ``(H, W)``, ``(N, H, W)``/``(N, 1, H, W)`` with
        ``(N, H, W)``). Returns ``self``; the state is unchanged when an error is raised."""
        if not isinstance(inputs, Tensor) or not isinstance(labels, Tensor) or not inputs.is_floating_point():
            raise ValueError('inputs must be a floating tensor and labels an integer tensor')
        if labels.dim() == 2:
            labels = labels.unsqueeze(0)
            inputs = inputs.unsqueeze(0)
        if self.binary and inputs.dim() == 4 and inputs.shape[1] == 1:
            inputs = inputs[:, 0]  # (N, 1, H, W), or (1, H, W) with (H, W)
        expected = labels.shape if self.binary else (labels.shape[0], self.num_classes) + tuple(labels.shape[1:])
        if labels.dim() != 3 or tuple(inputs.shape) != tuple(expected):
            raise ValueError(f'{name + ": " if name else ""}inputs of shape {tuple(inputs.shape)} do not match '
                             f'labels of shape {tuple(labels.shape)} for distance statistics (expected '
                             f'{tuple(expected)})')
        acc = torch.zeros_like(self._state)
        view = acc.view(self.n_bands, 3, self.n_bins)
        size = self.n_bands * self.n_bins
        workspace: dict = {}
        with torch.no_grad():
            for x, lab in zip(inputs, labels):
                dev = x.device  # distances on the CPU (OpenCV), the rest on the inputs' device
                edges = torch.tensor(self.edges, dtype=torch.float64, device=dev)
                dist = torch.from_numpy(boundary_distance(lab, self.ignore_index)).reshape(-1).to(dev)
                y = lab.reshape(-1).long().to(dev)
                keep = ~torch.isnan(dist)
                if self.exclude_background:
                    keep &= y != 0
                x2 = x.reshape(-1) if self.binary else x.reshape(x.shape[0], -1)
                checked = values_ok(x2, self.input_type)
                for start in range(0, y.shape[0], self.chunk_size):
                    stop = start + self.chunk_size
                    sel = keep[start:stop].nonzero().squeeze(1)
                    if sel.numel() == 0:
                        continue
                    xc = x2[..., start:stop]
                    ys = y[start:stop].index_select(0, sel)
                    check_labels(ys, self.num_classes, self.ignore_index, name)
                    if not checked:
                        check_values(xc.index_select(-1, sel), self.input_type, name)
                    conf, pred = self._top_label(xc, workspace)  # whole chunk: no copy of the selected logits
                    conf, correct = conf.index_select(0, sel), pred.index_select(0, sel) == ys
                    band = torch.searchsorted(edges, dist[start:stop].index_select(0, sel).contiguous())
                    base = (torch.ceil(conf * _BASE) - 1.0).clamp_min(0.0).long()
                    cell = band * self.n_bins + base * self.n_bins // _BASE
                    for i, weights in enumerate((None, conf, correct.double())):
                        counts = torch.bincount(cell, weights=weights, minlength=size).double().cpu()
                        view[:, i] += counts.view(self.n_bands, self.n_bins)
        self._state += acc
        return self

    # ---------------------------------------------------------------- results
    def collapse(self, edges: Sequence[float]) -> Tensor:
        """``(len(edges) + 1, 3, bins)`` statistics of the coarser bands of ``edges`` (a subset of ``self.edges``)."""
        edges = _check_edges(edges)
        missing = [e for e in edges if e not in self.edges]
        if missing:
            raise ValueError(f'edges {missing} are not among the accumulated band edges {self.edges}')
        # fine band i ((edges_{i-1}, edges_i]) goes to the coarse band counting the coarse edges below its top
        group = torch.tensor([sum(f < top for f in edges) for top in self.edges + [float('inf')]], dtype=torch.long)
        out = torch.zeros(len(edges) + 1, 3, self.n_bins, dtype=torch.float64)
        return out.index_add_(0, group, self._view())

    def band_table(self, edges: Optional[Sequence[float]] = None) -> Dict[str, list]:
        """Per band: ``lower``/``upper`` edges, ``count``, ``ECE`` (percent, ``n_bins`` bins), ``accuracy`` and
        ``confidence`` (percent; ``None`` for empty bands), for ``edges`` (default: the accumulated ones)."""
        edges = self.edges if edges is None else _check_edges(edges)
        stats = self.collapse(edges)
        lower = [None] + list(edges)
        upper = list(edges) + [None]
        out: Dict[str, list] = dict(lower=lower, upper=upper, count=[], ECE=[], accuracy=[], confidence=[])
        for band in stats:
            values = band_values(band)
            out['count'].append(int(band[0].sum()))
            for key in ('ECE', 'accuracy', 'confidence'):
                out[key].append(values[key])
        return out

    # ---------------------------------------------------------------- algebra
    def merge(self, other: 'SpatialCalibrationStatistics') -> 'SpatialCalibrationStatistics':
        """Add ``other`` into ``self`` (same configuration) and return ``self``."""
        if not isinstance(other, SpatialCalibrationStatistics) or other._config() != self._config():
            raise ValueError('can only merge SpatialCalibrationStatistics with the same configuration')
        self._state += other._state
        return self

    def copy(self) -> 'SpatialCalibrationStatistics':
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._state = self._state.clone()
        return new

    def to_tensor(self) -> Tensor:
        """A copy of the flat float64 state (sum it across processes)."""
        return self._state.clone()

    def from_tensor(self, tensor: Tensor) -> 'SpatialCalibrationStatistics':
        """New statistics with this configuration and the state ``tensor``."""
        if not isinstance(tensor, Tensor) or tuple(tensor.shape) != (self.state_size,):
            raise ValueError(f'state tensor must have shape ({self.state_size},)')
        new = self.copy()
        new._state = tensor.detach().to('cpu', torch.float64).clone()
        return new


def band_values(band: Tensor) -> Dict[str, Optional[float]]:
    """``ECE``, ``accuracy`` and ``confidence`` (percent; ``None`` when empty) of ``(3, bins)`` band statistics."""
    n = float(band[0].sum())
    if n == 0:
        return dict(ECE=None, accuracy=None, confidence=None)
    return dict(ECE=100.0 * float((band[2] - band[1]).abs().sum()) / n, accuracy=100.0 * float(band[2].sum()) / n,
                confidence=100.0 * float(band[1].sum()) / n)
