"""The optimisers of the post-hoc calibrators: a bracketing Newton iteration on ``1/T`` and streaming L-BFGS."""
import math
import warnings
from typing import Any, Callable, Dict, Sequence, Tuple

import torch
from torch import Tensor

from .data import PixelPasses

__all__ = ['newton_inverse_temperature', 'lbfgs_fit']


def newton_inverse_temperature(stats: Callable[[float], Tuple[float, float, float]], *, t_min: float,
                               t_max: float, tol: float = 1e-8, max_iter: int = 100, name: str = 'temperature fit'
                               ) -> Tuple[float, Dict[str, Any]]:
    """Minimise a convex objective ``f(beta)`` of the inverse temperature ``beta = 1 / T`` on ``[1/t_max, 1/t_min]``.

    Safeguarded Newton with a bracketing phase. Each call of ``stats(beta)`` is one pass over the data and returns
    ``(f, f', f'')`` (sums over pixels). The sign of ``f'`` shrinks a bracket ``[lo, hi]`` around the minimiser.

    * Until ``f'`` has been seen with both signs, the minimiser may lie far away: on (near-)separable data
      ``f' ~ -a exp(-b beta)``, whose Newton steps all have the same length ``1/b``, so plain Newton crawls. When
      a Newton step is not at least half as short as the previous one in the same direction (no quadratic
      convergence), the step is doubled instead (``beta + 2 * previous step``, at most to the bound), which
      reaches any minimiser (or the bound) in ``O(log)`` passes.
    * Once both signs have been seen, a Newton step that leaves the bracket (or a non-positive ``f''``), or that
      is not at most half the step of two iterations before (no quadratic convergence yet), is replaced by the
      bracket's geometric midpoint (the safeguard of Numerical Recipes' ``rtsafe``, in ``log beta``).

    It stops when a step changes ``beta`` by at most ``tol * beta`` or the bracket has shrunk to that size; a
    minimiser outside the interval ends at the nearest bound (``info['at_bound']`` is then ``'t_min'`` or
    ``'t_max'``, and a ``RuntimeWarning`` says so). If ``max_iter`` passes do not converge, a ``RuntimeWarning``
    is issued and ``info['converged']`` is ``False``.

    The NLL of temperature scaling and the BCE of binary temperature scaling are convex in ``beta`` because the
    scaled logits ``beta * z`` are linear in it.

    Args:
        stats: ``beta -> (f, f', f'')``.
        t_min, t_max: the temperature interval.
        tol: relative step size of ``beta`` at which the iteration stops.
        max_iter: most passes.
        name: what the warnings call the fit.

    Returns:
        ``(beta, info)`` with ``info = {'passes', 'objective_at_start', 'objective', 'converged', 'at_bound'}``
        (objective values as returned by ``stats``: sums, not means; ``at_bound`` is ``None`` inside).

    Example:
        >>> beta, info = newton_inverse_temperature(lambda b: ((b - 0.5) ** 2, 2 * (b - 0.5), 2.0),
        ...                                         t_min=0.01, t_max=100.0)
        >>> round(1 / beta, 6), info['converged']
        (2.0, True)
    """
    bound_lo, bound_hi = 1.0 / t_max, 1.0 / t_min
    lo, hi = bound_lo, bound_hi
    beta = min(max(1.0, lo), hi)
    info: Dict[str, Any] = {'passes': 0, 'objective_at_start': None, 'objective': None, 'converged': False,
                            'at_bound': None}
    seen_neg = seen_pos = False
    last_newton = last_step = older_step = 0.0  # previous Newton step, previous two steps taken (signed)
    for _ in range(max_iter):
        f, g, h = stats(beta)
        info['passes'] += 1
        if info['objective_at_start'] is None:
            info['objective_at_start'] = f
        info['objective'] = f
        if g > 0:
            hi = beta
            seen_pos = True
        elif g < 0:
            lo = beta
            seen_neg = True
        else:
            info['converged'] = True
            break
        newton = -g / h if h > 0 else math.nan
        step = beta + newton
        one_sided = not (seen_neg and seen_pos)
        if one_sided and newton * last_newton > 0 and abs(newton) > 0.5 * abs(last_newton):
            # linear, not quadratic, progress towards an unbracketed minimiser: expand (bracketing step)
            grow = max(abs(newton), 2.0 * abs(last_step))
            step = min(max(beta + math.copysign(grow, newton), lo), hi)
        last_newton = newton if one_sided and math.isfinite(newton) else 0.0
        if not lo < step < hi and not (one_sided and step in (lo, hi) and step != beta):
            step = math.sqrt(lo * hi)
        elif not one_sided and abs(step - beta) > 0.5 * (abs(older_step) if older_step else hi - lo):
            step = math.sqrt(lo * hi)  # Newton does not halve the step of two iterations ago: bisect instead
        done = abs(step - beta) <= tol * beta or hi <= lo * (1.0 + tol)
        older_step, last_step = (last_step if not one_sided else 0.0), step - beta
        beta = step
        if done:
            info['converged'] = True
            break
    if info['converged']:
        if beta >= bound_hi * (1.0 - tol) and not seen_pos:
            info['at_bound'] = 't_min'
        elif beta <= bound_lo * (1.0 + tol) and not seen_neg:
            info['at_bound'] = 't_max'
        if info['at_bound'] is not None:
            warnings.warn(f'{name}: the minimiser lies at or beyond {info["at_bound"]} (T = {1.0 / beta:.4g}); the '
                          'fit data may be (nearly) separable: widen t_min/t_max or check the data', RuntimeWarning,
                          stacklevel=3)
    else:
        warnings.warn(f'{name} did not converge in {max_iter} passes (T = {1.0 / beta:.4g}, bracket of T '
                      f'[{1.0 / hi:.4g}, {1.0 / lo:.4g}]); raise max_iter or check the data', RuntimeWarning,
                      stacklevel=3)
    return beta, info


def lbfgs_fit(params: Sequence[Tensor], chunk_loss: Callable[[Tensor, Tensor], Tensor], passes: PixelPasses, *,
              max_iter: int = 100, tolerance_grad: float = 1e-9) -> Dict[str, Any]:
    """Minimise the mean per-pixel loss over a stream with L-BFGS (strong Wolfe line search).

    Every closure evaluation is one pass: ``chunk_loss(z, y)`` returns the *summed* loss of a chunk, whose
    gradient is accumulated chunk by chunk, then loss and gradients are divided by the pixel count. Memory:
    one chunk's autograd graph (or the cache of ``passes``), never the whole data set.

    Args:
        params: float64 leaf tensors with ``requires_grad=True``; updated in place.
        chunk_loss: summed loss of a ``(z, y)`` chunk as a differentiable scalar.
        passes: the pixel source.
        max_iter: L-BFGS iterations (each costs one or more passes).
        tolerance_grad: stop when the largest gradient entry is below this.

    Returns:
        ``{'passes', 'objective_at_start', 'objective'}`` (mean losses).
    """
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, max_eval=max_iter * 2,
                                  tolerance_grad=tolerance_grad, tolerance_change=1e-14, history_size=20,
                                  line_search_fn='strong_wolfe')
    info: Dict[str, Any] = {'passes': 0, 'objective_at_start': None, 'objective': None}

    def closure() -> Tensor:
        optimizer.zero_grad()
        total, count = 0.0, 0
        for z, y in passes:
            loss = chunk_loss(z, y)
            loss.backward()
            total += float(loss.detach())
            count += y.numel()
        for p in params:
            p.grad.div_(count)
        info['passes'] += 1
        mean = total / count
        if info['objective_at_start'] is None:
            info['objective_at_start'] = mean
        info['objective'] = mean
        return torch.tensor(mean, dtype=torch.float64)

    optimizer.step(closure)
    return info
