"""Input mixup draws for RankMixup: ``lambda ~ Beta(a, a)`` and a random pairing, from a generator you own.

One *draw* is one mixing coefficient ``lambda`` shared by the whole batch and one random permutation ``pi``
of the batch: ``x~_b = lambda * x_b + (1 - lambda) * x_pi(b)`` (Zhang et al., "mixup", ICLR 2018; the form
RankMixup uses, Noh et al., ICCV 2023). Every random number comes from an explicit ``torch.Generator``, so a
run is reproducible from the generator's seed and state, whatever else consumes the global RNG.

``torch.distributions.Beta`` cannot take a generator, so :func:`sample_beta` draws two Gamma variates with
Marsaglia and Tsang's method ("A simple method for generating gamma variables", ACM TOMS 2000), in log space so
that small shapes (``a < 1``, where Gamma variates underflow) still give a valid ``lambda``.

This module imports no OpenMMLab package.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from calibseg.utils.validation import check_positive_float, check_positive_int

__all__ = ['MixupDraw', 'sample_beta', 'draw_mixup', 'mix_images', 'check_mixup_alpha']


def check_mixup_alpha(name: str, alpha) -> float:
    """Return ``alpha`` as a float if it is a finite number ``> 0`` (the Beta(a, a) shape), else raise."""
    return check_positive_float(f'{name} (the Beta(a, a) shape of the mixup coefficient)', alpha)


def _uniform(generator: torch.Generator) -> float:
    """A draw from (0, 1]: ``1 - U[0, 1)``, so that its logarithm is finite."""
    return 1.0 - torch.rand((), generator=generator, dtype=torch.float64).item()


def _log_gamma_variate(shape: float, generator: torch.Generator) -> float:
    """``log G`` with ``G ~ Gamma(shape, 1)`` (Marsaglia-Tsang; ``shape < 1`` boosted by ``U^(1/shape)``)."""
    log_boost = 0.0
    if shape < 1.0:
        log_boost = math.log(_uniform(generator)) / shape
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = torch.randn((), generator=generator, dtype=torch.float64).item()
        v = 1.0 + c * x
        if v <= 0.0:
            continue
        v = v * v * v
        if math.log(_uniform(generator)) < 0.5 * x * x + d - d * v + d * math.log(v):
            return math.log(d * v) + log_boost


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of ``lambda ~ Beta(alpha, alpha)`` from ``generator``.

    ``lambda = G1 / (G1 + G2) = sigmoid(log G1 - log G2)`` with independent ``G1, G2 ~ Gamma(alpha, 1)``.

    Raises:
        ValueError: if ``alpha`` is not a finite number ``> 0``.
    """
    alpha = check_mixup_alpha('alpha', alpha)
    log_x = _log_gamma_variate(alpha, generator)
    log_y = _log_gamma_variate(alpha, generator)
    diff = log_x - log_y
    # a numerically stable sigmoid
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)


class MixupDraw(NamedTuple):
    """``T`` mixup draws for a batch of ``B`` images.

    Attributes:
        lams: ``(T,)`` float64 mixing coefficients, one per draw.
        permutations: ``(T, B)`` int64; row ``t`` pairs image ``b`` with image ``permutations[t, b]``.
    """

    lams: Tensor
    permutations: Tensor

    @property
    def num_mixups(self) -> int:
        return self.lams.numel()


def draw_mixup(batch_size: int, num_mixups: int, alpha: float, generator: torch.Generator) -> MixupDraw:
    """``num_mixups`` independent draws, each ``lambda ~ Beta(alpha, alpha)`` then a permutation of the batch.

    The order of the random numbers is fixed (draw ``t``: its ``lambda``, then its permutation), so the same
    generator state always gives the same draws.
    """
    check_positive_int('batch_size', batch_size)
    check_positive_int('num_mixups', num_mixups)
    check_mixup_alpha('alpha', alpha)
    lams, perms = [], []
    for _ in range(num_mixups):
        lams.append(sample_beta(alpha, generator))
        perms.append(torch.randperm(batch_size, generator=generator))
    return MixupDraw(torch.tensor(lams, dtype=torch.float64), torch.stack(perms))


def mix_images(inputs: Tensor, draw: MixupDraw) -> Tensor:
    """The mixed batches of every draw, stacked: ``(T * B, ...)`` with block ``t`` holding
    ``lambda_t * x + (1 - lambda_t) * x[pi_t]``.

    Args:
        inputs: ``(B, ...)`` floating-point images (normalised or not: mixing commutes with a per-channel
            affine normalisation, because ``lambda + (1 - lambda) = 1``).
        draw: from :func:`draw_mixup` with the same ``B``.
    """
    if not isinstance(inputs, Tensor) or not inputs.is_floating_point():
        raise TypeError(f'inputs must be a floating-point tensor, got {getattr(inputs, "dtype", inputs)!r}')
    if draw.permutations.dim() != 2 or draw.permutations.shape[1] != inputs.shape[0]:
        raise ValueError(f'the draw pairs batches of {tuple(draw.permutations.shape)[1:]} images but inputs '
                         f'hold {inputs.shape[0]}')
    perms = draw.permutations.to(inputs.device)
    blocks = []
    for t in range(draw.num_mixups):
        lam = float(draw.lams[t])
        blocks.append(torch.lerp(inputs[perms[t]], inputs, lam))  # lam * x + (1 - lam) * x[pi]
    return torch.cat(blocks, dim=0)
