"""Temperature scaling (Guo et al., ICML 2017, "On Calibration of Modern Neural Networks").

One temperature ``T > 0`` for every pixel and class: ``softmax(z / T)``. The prediction ``argmax z`` is unchanged.
Two fitting methods:

* ``method='nll'`` (default): minimise the mean NLL ``(1/N) sum_i [logsumexp(beta z_i) - beta z_{i,y_i}]`` over the
  inverse temperature ``beta = 1/T``, which is convex (the scaled logits are linear in ``beta``). A safeguarded
  Newton iteration needs ``f``, ``f' = sum_i (E_{p_i}[z_i] - z_{i,y_i})`` and ``f'' = sum_i Var_{p_i}[z_i]``
  (``p_i = softmax(beta z_i)``), each evaluated in **one streaming pass**; it typically converges in 5-8 passes.
  The exact NLL has no finite sufficient statistic, so each pass re-reads the data (or the explicit cache).
* ``method='grid'``: the benchmark protocol of Tao et al. (ICLR 2024, "A Benchmark Study on Calibration"): pick
  ``T`` from a grid (default ``{0.1, 0.2, ..., 10.0}``) minimising ECE-15 (equal-width bins on the top-label
  confidence, ``(lower, upper]`` with 0 in the first and 1 in the last bin) or NLL. All temperatures are evaluated
  in **one pass**: since ``argmax`` and therefore correctness do not depend on ``T``, each batch adds its pixels to
  per-temperature histograms (count, summed confidence, summed correctness per bin) and NLL sums, a fixed
  ``G x B`` float64 state. Cost: ``G * K`` exponentials per pixel (use ``max_pixels_per_image``).

Memory: O(one batch) plus a ``2**16``-pixel float64 chunk; with ``cache=True`` the kept pixels, at most
``images * max_pixels_per_image * (4 K + 8)`` bytes (all labelled pixels without subsampling).
"""
import math
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..utils.validation import check_choice, check_positive_float, check_positive_int
from .base import BaseCalibrator, LogTemperature
from .data import DataSource, PixelPasses
from .optim import newton_inverse_temperature

__all__ = ['TemperatureScaling', 'grid_statistics', 'nll_statistics', 'DEFAULT_GRID']

#: The benchmark grid T in {0.1, 0.2, ..., 10.0} (``i / 10`` is the closest double to each decimal).
DEFAULT_GRID: Tuple[float, ...] = tuple(i / 10 for i in range(1, 101))

_GRID_BLOCK = 1 << 22  # float32 elements of one (temperatures x pixels x classes) block of the grid search
_GRID_TEMPERATURES_PER_BLOCK = 16


def grid_statistics(passes: PixelPasses, temperatures: Sequence[float], *, num_bins: int = 15,
                    reduce: Optional[Callable[[Tensor], Tensor]] = None) -> Dict[str, Tensor]:
    """One pass over ``passes`` accumulating top-label histograms and NLL sums for every temperature.

    With ``d_i = z_i - max_k z_{i,k}`` and ``S_i(T) = sum_k exp(d_{i,k} / T)``, the confidence is ``1 / S_i(T)`` and
    the NLL ``log S_i(T) + (max_k z_{i,k} - z_{i,y_i}) / T``; correctness ``1[argmax z_i = y_i]`` is the same for
    every ``T > 0``.

    Args:
        passes: the pixel source (one pass is made).
        temperatures: G positive temperatures.
        num_bins: B equal-width confidence bins.
        reduce: sums a float64 tensor over processes (a distributed fit): the sums are reduced before the
            ECE and mean NLL are computed.

    Returns:
        ``count``, ``confidence``, ``correct`` of shape ``(G, B)`` and ``nll`` of shape ``(G,)`` (float64 sums),
        ``num_pixels``, ``ece`` (``sum_b |correct_b - confidence_b| / N``) and ``mean_nll``, shape ``(G,)``.
    """
    num_bins = check_positive_int('num_bins', num_bins)
    temps = torch.as_tensor(list(temperatures), dtype=torch.float64)
    n_t = temps.numel()
    size = n_t * num_bins
    count = torch.zeros(size, dtype=torch.float64)
    conf_sum = torch.zeros(size, dtype=torch.float64)
    acc_sum = torch.zeros(size, dtype=torch.float64)
    nll = torch.zeros(n_t, dtype=torch.float64)
    total = 0
    device = passes.device
    inv = temps.reciprocal().to(device, torch.float32)
    offsets = (torch.arange(n_t, device=device) * num_bins).unsqueeze(1)
    count, conf_sum, acc_sum, nll = (t.to(device) for t in (count, conf_sum, acc_sum, nll))
    for z, y in passes:
        z = z.float()
        top, pred = z.max(dim=1, keepdim=True)
        d = z - top
        gap = -d.gather(1, y.unsqueeze(1)).squeeze(1)  # max_k z_k - z_y >= 0
        correct = (pred.squeeze(1) == y).double()
        total += y.numel()
        step = max(1, _GRID_BLOCK // (z.shape[1] * min(n_t, _GRID_TEMPERATURES_PER_BLOCK)))
        for p0 in range(0, y.numel(), step):
            d_p, gap_p, cor_p = d[p0:p0 + step], gap[p0:p0 + step], correct[p0:p0 + step]
            for t0 in range(0, n_t, _GRID_TEMPERATURES_PER_BLOCK):
                it = inv[t0:t0 + _GRID_TEMPERATURES_PER_BLOCK]
                s = torch.exp(d_p.unsqueeze(0) * it.view(-1, 1, 1)).sum(dim=2)  # (g, p), >= 1
                conf = s.reciprocal()
                nll[t0:t0 + it.numel()] += (s.log() + gap_p.unsqueeze(0) * it.unsqueeze(1)).double().sum(dim=1)
                bins = (conf * num_bins).ceil().long().sub_(1).clamp_(0, num_bins - 1)
                flat = (bins + offsets[t0:t0 + it.numel()]).flatten()
                count += torch.bincount(flat, minlength=size).double()
                conf_sum += torch.bincount(flat, weights=conf.double().flatten(), minlength=size)
                acc_sum += torch.bincount(flat, weights=cor_p.expand(it.numel(), -1).flatten(), minlength=size)
    shape = (n_t, num_bins)
    count, conf_sum, acc_sum = (t.view(shape).cpu() for t in (count, conf_sum, acc_sum))
    nll = nll.cpu()
    if reduce is not None:
        sizes = [count.numel(), conf_sum.numel(), acc_sum.numel(), nll.numel(), 1]
        vector = torch.cat([count.flatten(), conf_sum.flatten(), acc_sum.flatten(), nll,
                            torch.tensor([float(total)], dtype=torch.float64)])
        count, conf_sum, acc_sum, nll, pixels = torch.split(reduce(vector).cpu(), sizes)
        count, conf_sum, acc_sum = (t.reshape(shape) for t in (count, conf_sum, acc_sum))
        total = int(pixels[0])
    return {'count': count, 'confidence': conf_sum, 'correct': acc_sum, 'nll': nll, 'num_pixels': total,
            'ece': (acc_sum - conf_sum).abs().sum(dim=1) / total, 'mean_nll': nll / total}


class TemperatureScaling(LogTemperature, BaseCalibrator):
    """Temperature scaling, ``z -> z / T`` with ``T = exp(log_temperature) > 0``.

    Args:
        num_classes: K (validated on every input).
        method: ``'nll'`` (safeguarded Newton on ``1/T``, streaming) or ``'grid'`` (one-pass grid search).
        grid: temperatures of the grid search (default :data:`DEFAULT_GRID`, ``0.1 ... 10.0``).
        grid_metric: ``'ece'`` (top-label ECE with ``num_bins`` equal-width bins) or ``'nll'``; a tie goes to the
            first of the tied entries of ``grid``.
        num_bins: bins of the grid search's ECE (15, the segmentation papers' headline ECE).
        t_min: smallest temperature of the NLL search (a minimiser below ends here).
        t_max: largest temperature of the NLL search.
        tol: relative step size of ``1/T`` at which the Newton iteration stops.
        max_iter: most passes of the Newton iteration.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(4000, 5, generator=g) * 3
        >>> y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
        >>> ts = TemperatureScaling(num_classes=5).fit(z * 2.0, y, ignore_index=None)
        >>> round(ts.temperature.item(), 1)
        2.0
    """

    method = 'TemperatureScaling'

    def __init__(self, *, num_classes: int, method: str = 'nll', grid: Optional[Sequence[float]] = None,
                 grid_metric: str = 'ece', num_bins: int = 15, t_min: float = 0.01, t_max: float = 100.0,
                 tol: float = 1e-8, max_iter: int = 100) -> None:
        super().__init__(num_classes=num_classes)
        check_choice('method', method, ('nll', 'grid'))
        check_choice('grid_metric', grid_metric, ('ece', 'nll'))
        self.fit_method = method
        if grid is None:
            grid = DEFAULT_GRID
        grid = [check_positive_float('grid entries', t) for t in grid]
        if not grid:
            raise ValueError('grid must contain at least one temperature')
        self.grid = tuple(grid)
        self.grid_metric = grid_metric
        self.num_bins = check_positive_int('num_bins', num_bins)
        self._init_temperature(t_min, t_max)
        self.tol = check_positive_float('tol', tol)
        self.max_iter = check_positive_int('max_iter', max_iter)

    def _temperature_range(self):
        return (min(self.grid), max(self.grid)) if self.fit_method == 'grid' else (self.t_min, self.t_max)

    def get_config(self) -> Dict[str, Any]:
        return {'num_classes': self.num_classes, 'method': self.fit_method, 'grid': list(self.grid),
                'grid_metric': self.grid_metric, 'num_bins': self.num_bins, 't_min': self.t_min,
                't_max': self.t_max, 'tol': self.tol, 'max_iter': self.max_iter}

    def describe(self) -> str:
        head = f'num_classes={self.num_classes}, method={self.fit_method!r}'
        if self.fit_method == 'grid':
            head += f', grid_metric={self.grid_metric!r}, {len(self.grid)} temperatures'
        if not self.fitted:
            return head + ', unfitted'
        return head + f', T={self.temperature.item():.4f}'

    def _calibrate(self, logits: Tensor) -> Tensor:
        return logits / self.temperature.to(logits.dtype)

    def fit(self, data: DataSource, labels: Optional[Tensor] = None, *, ignore_index: Optional[int] = 255,
            max_pixels_per_image: Optional[int] = None, generator: Optional[torch.Generator] = None,
            cache: bool = False, reduce: Optional[Callable[[Tensor], Tensor]] = None) -> 'TemperatureScaling':
        """Fit ``T`` on logits and labels (see :mod:`calibseg.calibrators.data` for the data conventions).

        Args:
            data: logits ``(N, K, H, W)`` / ``(P, K)`` (with ``labels``), or a re-iterable source of
                ``(logits, labels)`` batches (a function returning an iterator, a list, a DataLoader).
            labels: labels of in-memory logits.
            ignore_index: label value excluded from fitting (``None``: every label must be a class).
            max_pixels_per_image: keep at most this many labelled pixels per image (needs ``generator``).
            generator: random source of the pixel subsampling.
            cache: keep the kept pixels in memory after the first pass (``M * (4 K + 8)`` bytes).
            reduce: a distributed fit: a function summing a float64 tensor over the processes (e.g.
                :func:`calibseg.utils.distributed.sum_across_ranks`), called by every process with the same
                sizes: on the pixel count, on ``(f, f', f'')`` of every Newton pass and on the grid statistics,
                so every process fits the same ``T`` on the union of the data. A process may then have no
                labelled pixel (it still joins every reduction).

        Returns:
            ``self``; ``fit_info`` holds ``temperature`` (the fitted value in float64; the module stores
            ``log T`` in its dtype), ``num_pixels`` (over all processes with ``reduce``), ``num_images`` (this
            process), ``passes``, ``nll_at_t1`` (method ``'nll'``, when ``T = 1`` lies in ``[t_min, t_max]``),
            ``nll`` (mean NLL at the last evaluated temperature, within ``tol`` of the result), ``converged``
            and ``at_bound`` (method ``'nll'``; see :func:`~calibseg.calibrators.optim.newton_inverse_temperature`,
            which warns when the fit does not converge) and, for the grid, ``ece`` and the per-temperature
            ``grid_ece`` and ``grid_nll`` lists.

        Example (a distributed fit in one process: ``reduce`` is then the identity):
            >>> g = torch.Generator().manual_seed(0)
            >>> z = torch.randn(2000, 4, generator=g) * 4
            >>> y = torch.multinomial(torch.softmax(z / 2, 1), 1, generator=g).squeeze(1)
            >>> ts = TemperatureScaling(num_classes=4).fit(z, y, ignore_index=None, reduce=lambda t: t)
            >>> ts.fit_info['converged'], round(ts.fit_info['temperature'], 1)
            (True, 2.0)
        """
        if reduce is not None and not callable(reduce):
            raise ValueError(f'reduce must be a callable summing a tensor over processes, got {reduce!r}')
        dtype = torch.float32 if self.fit_method == 'grid' else torch.float64
        passes = self._passes(data, labels, ignore_index=ignore_index, max_pixels_per_image=max_pixels_per_image,
                              generator=generator, cache=cache, dtype=dtype, allow_empty=reduce is not None)
        if self.fit_method == 'grid':
            stats = grid_statistics(passes, self.grid, num_bins=self.num_bins, reduce=reduce)
            n = stats['num_pixels']
            if n == 0:
                raise ValueError('the data source yielded no labelled pixels on any process')
            values = stats['ece'] if self.grid_metric == 'ece' else stats['mean_nll']
            best = int(torch.argmin(values))  # first minimum
            temperature = self.grid[best]
            info = {'passes': 1, 'grid': list(self.grid), 'grid_ece': stats['ece'].tolist(),
                    'grid_nll': stats['mean_nll'].tolist(), 'nll': float(stats['mean_nll'][best]),
                    'ece': float(stats['ece'][best])}
        else:
            def objective(beta: float) -> Tuple[float, float, float]:
                local = nll_statistics(passes, beta)
                if reduce is None:
                    return local
                return tuple(reduce(torch.tensor(local, dtype=torch.float64)).tolist())

            beta, newton = newton_inverse_temperature(objective, t_min=self.t_min, t_max=self.t_max, tol=self.tol,
                                                      max_iter=self.max_iter, name='TemperatureScaling.fit')
            temperature = 1.0 / beta
            n = _total_pixels(passes, reduce)
            info = {'passes': newton['passes'], 'converged': newton['converged'], 'at_bound': newton['at_bound'],
                    'nll': newton['objective'] / n}
            if self.t_min <= 1.0 <= self.t_max:
                info['nll_at_t1'] = newton['objective_at_start'] / n
        with torch.no_grad():
            self.log_temperature.fill_(math.log(temperature))
        self.fit_info = {'temperature': temperature, 'num_pixels': n,
                         'num_images': passes.num_images, **info}
        self._mark_fitted()
        return self


def _total_pixels(passes: PixelPasses, reduce: Optional[Callable[[Tensor], Tensor]]) -> int:
    """The fitted pixels over all processes (one reduction with ``reduce``); raises if there are none."""
    n = passes.num_pixels
    if reduce is not None:
        n = int(reduce(torch.tensor([float(n)], dtype=torch.float64))[0])
        if n == 0:
            raise ValueError('the data source yielded no labelled pixels on any process')
    return n


def nll_statistics(passes: Iterable[Tuple[Tensor, Tensor]], beta: float) -> Tuple[float, float, float]:
    """``(sum NLL, d/dbeta, d2/dbeta2)`` of ``softmax(beta z)`` over one pass of ``(z (P, K), y (P,))`` chunks.

    With ``c = z - max_k z_k`` (so ``c <= 0`` and the top class has ``c = 0``), ``e_k = exp(beta c_k)`` and
    ``S = sum_k e_k``: NLL ``= log S - beta c_y``, its derivative ``E[c] - c_y`` and second derivative
    ``Var[c] = E[c^2] - E[c]^2`` under ``p = e / S``. Centring at the maximum avoids overflow and the
    cancellation in ``E[c^2] - E[c]^2`` when ``p`` concentrates on the top class (both moments are then ~0).
    These are sums, so the statistics of several processes add up (:meth:`TemperatureScaling.fit`'s ``reduce``).

    Example:
        >>> z, y = torch.tensor([[0.0, 0.0]], dtype=torch.float64), torch.tensor([0])
        >>> f, g, h = nll_statistics([(z, y)], 1.0)
        >>> round(f, 6), g, h  # log 2; the derivatives vanish for equal logits
        (0.693147, 0.0, 0.0)
    """
    f = g = h = 0.0
    for z, y in passes:
        c = z - z.max(dim=1, keepdim=True).values
        e = (c * beta).exp_()
        total = e.sum(dim=1)
        ec = e.mul_(c)
        m1 = ec.sum(dim=1).div_(total)
        m2 = ec.mul_(c).sum(dim=1).div_(total)
        c_y = c.gather(1, y.unsqueeze(1)).squeeze(1)
        f += float((total.log_() - beta * c_y).sum())
        g += float((m1 - c_y).sum())
        h += float((m2 - m1.square()).clamp_(min=0).sum())
    return f, g, h
