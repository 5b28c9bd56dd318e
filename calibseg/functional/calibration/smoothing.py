r"""Gaussian kernel smoothing of weighted point masses on ``[0, 1]``, in ``O(E log E)`` on a node grid.

Point masses (fine cells, or pixels) at ``x_j`` with weights ``w_j`` are *deposited* onto ``E`` uniform nodes
``t_l = l / (E - 1)`` by linear interpolation (a mass at ``x`` between two nodes is split in proportion to the
distances, which keeps its total mass and its mean), convolved with a sampled Gaussian by FFT, and read back by
linear interpolation. Deposit and read-back each blur the kernel by a tent of the node spacing
``δ = 1/(E - 1)``, a relative error ``O((δ/h)^2)`` for bandwidth ``h`` (callers use ``δ <= h/20``). Memory is
``O(E + points)``, never ``points^2``. Every operation is differentiable (used by the SECE training loss).
"""
import math

import torch
from torch import Tensor

__all__ = ['node_count', 'deposit', 'smooth_reflected', 'smooth_plain', 'interpolate', 'trapezoid']

_MAX_NODES = 2**18 + 1


def node_count(bandwidth: float, *, per_bandwidth: float = 20.0, minimum: int = 2049) -> int:
    """``E = 2^m + 1`` nodes with spacing ``<= bandwidth / per_bandwidth`` (clamped to ``[minimum, 2^18 + 1]``)."""
    need = per_bandwidth / max(bandwidth, 1e-12)
    e = 2 ** max(0, math.ceil(math.log2(max(need, 1.0)))) + 1
    return int(min(max(e, minimum), _MAX_NODES))


def _positions(x: Tensor, n_nodes: int):
    u = x.clamp(0.0, 1.0) * (n_nodes - 1)
    i0 = u.detach().floor().clamp_(0, n_nodes - 2).long()
    frac = u - i0.to(u.dtype)
    return i0, frac


def deposit(x: Tensor, weights: Tensor, n_nodes: int) -> Tensor:
    """Linear deposit of masses ``weights`` (``(R, m)`` or ``(m,)``) at positions ``x`` (``(m,)``) on the nodes.

    Returns:
        ``(R, E)`` (or ``(E,)``) node masses; the totals over nodes equal the totals of ``weights``.
    """
    squeeze = weights.dim() == 1
    w = weights.unsqueeze(0) if squeeze else weights
    i0, frac = _positions(x, n_nodes)
    out = torch.zeros(w.shape[0], n_nodes, dtype=w.dtype, device=w.device)
    out = out.index_add(1, i0, w * (1.0 - frac)).index_add(1, i0 + 1, w * frac)
    return out.squeeze(0) if squeeze else out


def interpolate(values: Tensor, x: Tensor) -> Tensor:
    """Linear interpolation of node values ``(R, E)`` (or ``(E,)``) at positions ``x`` (``(m,)``)."""
    n_nodes = values.shape[-1]
    i0, frac = _positions(x, n_nodes)
    return values[..., i0] * (1.0 - frac) + values[..., i0 + 1] * frac


def _gaussian(offsets: Tensor, bandwidth: float) -> Tensor:
    return torch.exp(-0.5 * (offsets / bandwidth) ** 2) / (bandwidth * math.sqrt(2.0 * math.pi))


def smooth_reflected(values: Tensor, bandwidth: float) -> Tensor:
    r"""Convolve node masses with the Gaussian reflected at both ends of ``[0, 1]``.

    ``out(t) = Σ_j w_j K̃(t, x_j)``, ``K̃(t, x) = Σ_{m ∈ Z} φ_h(t - x - 2m) + φ_h(t + x - 2m)`` (the density of
    ``x + h·Z`` folded back into ``[0, 1]``; it integrates to 1 over ``[0, 1]``). Computed as the circular
    convolution of the even periodic extension (period ``2(E - 1)`` nodes) with the periodised Gaussian; a mass
    on an end node coincides with its mirror image, so the end nodes count twice (unlike relplot's discrete
    reflection, which loses half of the mass at exactly 0 or 1).

    Args:
        values: ``(R, E)`` or ``(E,)`` node masses (from :func:`deposit`).
        bandwidth: ``h``, the Gaussian standard deviation.

    Returns:
        Density values at the nodes, same shape as ``values``.
    """
    n_nodes = values.shape[-1]
    period = 2 * (n_nodes - 1)
    # the images of a mass on the end node t = 0 (or 1) coincide with it: double the end nodes, mirror the rest
    ends = torch.ones(n_nodes, dtype=values.dtype, device=values.device)
    ends[0] = ends[-1] = 2.0
    ext = torch.cat([values * ends, values[..., 1:-1].flip(-1)], dim=-1)
    d = torch.arange(period, dtype=values.dtype, device=values.device) / (n_nodes - 1)
    reps = int(math.ceil(8.0 * bandwidth / 2.0)) + 1
    kernel = sum(_gaussian(d - 2.0 * m, bandwidth) for m in range(-reps, reps + 1))
    out = torch.fft.irfft(torch.fft.rfft(ext, dim=-1) * torch.fft.rfft(kernel), n=period, dim=-1)
    return out[..., :n_nodes]


def smooth_plain(values: Tensor, bandwidth: float, *, normalized: bool = False) -> Tensor:
    r"""Convolve node masses with the (unreflected) Gaussian ``exp(-(t - x)^2 / (2 h^2))`` over ``[0, 1]``.

    ``normalized=True`` divides the kernel by ``h √(2π)`` (a density); Nadaraya–Watson ratios do not need it.
    Zero-padded (linear, not circular) FFT convolution over all node pairs.
    """
    n_nodes = values.shape[-1]
    n_fft = 1 << (2 * n_nodes - 1).bit_length()
    d = torch.arange(n_fft, dtype=values.dtype, device=values.device)
    d = torch.where(d < n_fft // 2, d, d - n_fft) / (n_nodes - 1)
    kernel = torch.exp(-0.5 * (d / bandwidth) ** 2)
    if normalized:
        kernel = kernel / (bandwidth * math.sqrt(2.0 * math.pi))
    out = torch.fft.irfft(torch.fft.rfft(values, n=n_fft, dim=-1) * torch.fft.rfft(kernel), n=n_fft, dim=-1)
    return out[..., :n_nodes]


def trapezoid(values: Tensor) -> Tensor:
    """Trapezoid integral over ``[0, 1]`` of node values (last dimension)."""
    n_nodes = values.shape[-1]
    return (values.sum(-1) - 0.5 * (values[..., 0] + values[..., -1])) / (n_nodes - 1)
