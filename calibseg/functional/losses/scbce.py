r"""Self-calibrating binary cross-entropy, SC-BCE (Liu et al., ICCV 2023), for one-channel heads.

Liu, Ye, Wang, Cui, Zhang, Zhang and Barnes, "Model Calibration in Dense Classification with
Adaptive Label Perturbation", ICCV 2023.

**Parametrisation (calibseg = the reference code's units).** ``beta`` here is the authors' code's
``beta`` (``β_code``, default 2.0) and ``alpha`` is the probability that an image's target map is
perturbed:

.. math::
    \tilde y_i = \begin{cases} (1 - 2\beta)\,y_i + \beta & \text{with probability } \alpha_i \\
                               y_i & \text{otherwise} \end{cases}
    \qquad
    \mathbb{E}[\tilde y_i] = (1 - 2\alpha_i\beta)\,y_i + \alpha_i\beta

so in expectation SC-BCE is per-image label smoothing with :math:`\varepsilon_i = 2\alpha_i\beta`
(expected target confidence :math:`1 - \alpha_i\beta`). The paper's figures label the same variants
with :math:`\beta_\text{paper} = 2\beta_\text{code}` (it writes the expected confidence as
:math:`1 - \beta_\text{paper}\alpha/2`): paper ``β=2.0 / 1.5 / 1.0`` are ``beta=1.0 / 0.75 / 0.5``
here. ``beta=1`` inverts the whole map (DisturbLabel-like), ``beta=0.5`` replaces it with 0.5.
Valid range: :math:`\beta > 0` and :math:`0 \le \alpha_i \le 1/(2\beta)` (so that
:math:`\varepsilon_i \le 1`).

For ``beta > 0.5`` a single draw's targets leave ``[0, 1]``: the reference default ``beta=2`` gives
targets ``-1`` (foreground) and ``2`` (background) on a perturbed image, and a perturbed image's
loss is unbounded below (it rewards pushing logits towards the wrong side without limit); only the
expectation over draws is a proper (label-smoothed) BCE. This is the authors' setting, so it is
allowed, not rejected.

This module imports no OpenMMLab package.
"""
import math
from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from calibseg.utils.validation import check_positive_float, is_real

from .utils import (
    Pixels,
    check_logits_and_target,
    check_reduction,
    compute_dtype,
    defer_value_checks,
    flat_size,
    reduce_loss,
)

AlphaLike = Union[float, Tensor]
"""Type of ``alpha``: one probability for every image, or a ``(N,)`` tensor (one per image)."""

# Relative slack on the upper bound 1/(2 beta), so that e.g. a float32 alpha of 1/3 passes for beta=1.5.
_ALPHA_RTOL = 1e-6


def validate_scbce_args(*, beta: float, alpha: Optional[float] = None) -> Dict[str, Optional[float]]:
    """Check ``beta > 0`` and, when given, a scalar ``alpha`` in ``[0, 1/(2 beta)]``.

    Returns:
        ``dict(beta=..., alpha=...)`` with floats (``alpha`` may stay ``None``).

    Raises:
        ValueError: naming ``beta`` or ``alpha`` and the bad value.
    """
    beta = check_positive_float('beta', beta)
    if alpha is not None:
        high = 1.0 / (2.0 * beta)
        if not is_real(alpha) or not math.isfinite(alpha) or not 0.0 <= alpha <= high * (1 + _ALPHA_RTOL):
            raise ValueError(f'alpha must lie in [0, 1/(2*beta)] = [0, {high:g}] for beta={beta:g}, '
                             f'got {alpha!r}')
        alpha = float(alpha)
    return dict(beta=beta, alpha=alpha)


def _alpha_per_image(alpha: AlphaLike, beta: float, batch: int, like: Tensor) -> Tensor:
    """``alpha`` as a detached ``(N,)`` tensor in the compute dtype and device of ``like``."""
    if isinstance(alpha, Tensor):
        if alpha.is_complex() or alpha.dtype == torch.bool:
            raise ValueError(f'alpha must hold real numbers, got dtype {alpha.dtype}')
        if alpha.dim() == 0:
            alpha = alpha.reshape(1).expand(batch)
        if alpha.shape != (batch,):
            raise ValueError(f'alpha must be a number or a tensor of shape (N,) = ({batch},), one value per '
                             f'image, got shape {tuple(alpha.shape)}')
        values = alpha.detach().to(torch.float64)
        high = 1.0 / (2.0 * beta)
        bad = ~torch.isfinite(values) | (values < 0) | (values > high * (1 + _ALPHA_RTOL))
        if bool(bad.any()):
            raise ValueError(f'alpha must lie in [0, 1/(2*beta)] = [0, {high:g}] for beta={beta:g}, got '
                             f'{values[bad].tolist()[:10]} at images {bad.nonzero().flatten().tolist()[:10]}')
        return alpha.detach().to(device=like.device, dtype=like.dtype)
    alpha = validate_scbce_args(beta=beta, alpha=alpha)['alpha']
    if alpha is None:
        raise ValueError('alpha is None: pass one probability or a (N,) tensor of per-image values')
    return like.new_full((batch,), alpha)


def _check_one_channel(logits: Tensor) -> None:
    if logits.shape[1] != 1:
        raise ValueError(
            f'SC-BCE is a binary (sigmoid) loss for one-channel heads: logits must have shape (N, 1, H, W), '
            f'got C={logits.shape[1]} channels in {tuple(logits.shape)}; build the head with out_channels=1, '
            f'num_classes=2 (multi-class heads need a softmax loss)')


def _binary_pixels(logits: Tensor, target: Tensor, ignore_index: int,
                   weight: Optional[Tensor]) -> Pixels:
    """Validate a one-channel batch; return it as :class:`Pixels` with ``(N, 1, M)`` logits."""
    valid = check_logits_and_target(
        logits, target, ignore_index, layout='(N, 1, *spatial)', check_channels=_check_one_channel, num_labels=2,
        label_hint='binary labels are 0 (background), 1 (foreground) or ignore_index; 0/255 saliency masks must be '
                   'binarised first, e.g. with LoadBinaryAnnotations')
    batch, size = logits.shape[0], flat_size(target.shape[1:])
    flat_valid = valid.reshape(batch, size)
    pixels = Pixels(logits.reshape(batch, 1, size).to(compute_dtype(logits.dtype)),
                    target.reshape(batch, size).long().masked_fill(~flat_valid, 0), flat_valid, None,
                    int(flat_valid.sum()), target.shape)
    if weight is not None:
        if not isinstance(weight, Tensor):
            raise TypeError(f'weight must be a tensor or None, got {type(weight).__name__}')
        pixels = pixels._replace(weight=pixels.per_pixel('weight', weight))
    return pixels


def check_soft_target(soft_target: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Validate a soft target beside its integer label map; return it detached, with 0 at ignored pixels.

    Args:
        soft_target: ``(N, *spatial)`` floating-point targets, in ``[0, 1]`` at every non-ignored pixel (values at
            ignored pixels, e.g. padding, are not read).
        target: the ``(N, *spatial)`` integer label map it goes with (its ignored pixels are ``~valid``).
        valid: ``(N, *spatial)`` bool mask of the non-ignored pixels.

    Returns:
        ``soft_target`` detached (a constant of the loss), of its own dtype, zero where ``~valid``.

    Raises:
        TypeError: if ``soft_target`` is not a floating-point tensor.
        ValueError: on a shape or device other than ``target``'s, or (on CPU; an asynchronous device assertion on
            accelerators, see :mod:`calibseg.functional.losses.utils`) a non-ignored value outside ``[0, 1]`` or
            not finite.
    """
    if not isinstance(soft_target, Tensor) or not soft_target.is_floating_point():
        raise TypeError(f'soft_target must be a floating-point tensor of values in [0, 1], got '
                        f'{getattr(soft_target, "dtype", type(soft_target).__name__)!r}')
    if soft_target.shape != target.shape:
        raise ValueError(f'soft_target of shape {tuple(soft_target.shape)} does not match the labels of shape '
                         f'{tuple(target.shape)}')
    if soft_target.device != target.device:
        raise ValueError(f'soft_target is on {soft_target.device} but the labels are on {target.device}')
    soft = soft_target.detach()
    outside = valid & ~((soft >= 0) & (soft <= 1))  # NaN fails both comparisons
    if defer_value_checks(soft):
        torch._assert_async(~outside.any(), 'soft_target holds values outside [0, 1] (or NaN) at non-ignored pixels')
    elif bool(outside.any()):
        raise ValueError(f'soft_target must lie in [0, 1] at non-ignored pixels; {int(outside.sum())} value(s) do '
                         f'not, e.g. {soft[outside][:5].tolist()}')
    return soft.masked_fill(~valid, 0.0)


def scbce_targets(target: Tensor, alpha: Tensor, *, beta: float, expected: bool = False,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Per-image perturbed targets :math:`\tilde y` (or their expectation) for ``{0, 1}`` labels or soft targets.

    Args:
        target: ``(N, M)`` labels in ``{0, 1}`` (any float or integer dtype), or soft targets in ``[0, 1]``.
        alpha: ``(N,)`` perturbation probabilities, already validated.
        beta: perturbation strength (code units, see the module docstring).
        expected: return :math:`(1 - 2\alpha\beta) y + \alpha\beta` instead of a draw.
        generator: CPU generator for the draws (one uniform number per image, consumed on every
            call whatever ``alpha``, so the stream does not depend on the values of ``alpha``).

    Returns:
        ``(N, M)`` targets in the dtype and device of ``alpha``.
    """
    y = target.to(alpha.dtype)
    if expected:
        shift = alpha * beta
    else:
        if not isinstance(generator, torch.Generator):
            raise ValueError('generator must be a torch.Generator for stochastic SC-BCE draws (no global RNG is '
                             'used); pass expected=True for the deterministic expectation')
        uniform = torch.rand(alpha.shape[0], generator=generator, dtype=torch.float64,
                             device=generator.device)
        perturbed = uniform.to(alpha.device) < alpha.to(torch.float64)
        shift = perturbed.to(alpha.dtype) * beta
    shift = shift.unsqueeze(1)
    return (1.0 - 2.0 * shift) * y + shift


def scbce_loss(logits: Tensor, target: Tensor, *, alpha: AlphaLike, beta: float = 2.0,
               expected: bool = False, generator: Optional[torch.Generator] = None,
               weight: Optional[Tensor] = None, ignore_index: int = 255, reduction: str = 'mean',
               avg_factor: Optional[Union[float, Tensor]] = None, soft_target: Optional[Tensor] = None) -> Tensor:
    r"""Self-calibrating binary cross-entropy (SC-BCE) of a one-channel head.

    Per image :math:`i`, with probability :math:`\alpha_i` the whole target map is perturbed,

    .. math::
        \tilde y_i = (1 - 2\beta)\,y_i + \beta \ \text{ w.p. } \alpha_i, \qquad
        \tilde y_i = y_i \ \text{ otherwise}, \qquad
        \mathrm{SC\text{-}BCE} = \frac{1}{P}\sum_{n} w_n\big[\operatorname{softplus}(z_n) - \tilde y_n z_n\big]

    (binary cross-entropy with logits :math:`z` against :math:`\tilde y`, averaged over the
    :math:`P` non-ignored pixels of the batch). With ``expected=True`` the target is the expectation
    :math:`(1 - 2\alpha_i\beta)\,y_i + \alpha_i\beta`: label smoothing with
    :math:`\varepsilon_i = 2\alpha_i\beta` (deterministic, the mean of the stochastic loss over draws).
    ``beta`` is in the reference code's units; the paper's :math:`\beta_\text{paper} = 2\beta`
    (module docstring). Liu et al., "Model Calibration in Dense Classification with Adaptive Label
    Perturbation", ICCV 2023.

    **Soft targets.** With ``soft_target`` (e.g. a resized grey-level mask / 255, as the reference code trains),
    :math:`y_n` is the soft value :math:`s_n \in [0, 1]` instead of the label: the same formulas with
    :math:`\tilde y = (1 - 2\beta)s + \beta` on a perturbed image. ``target`` still says which pixels are
    ignored (``ignore_index``); its 0/1 values are not used.

    Args:
        logits: ``(N, 1, *spatial)`` logits of a one-channel (sigmoid) head. fp16/bf16 are
            computed in float32.
        target: ``(N, *spatial)`` integer labels in ``{0, 1}`` or ``ignore_index``.
        alpha: perturbation probability, a number for every image or a ``(N,)`` tensor of
            per-image values (ASLP), in ``[0, 1/(2 beta)]``; treated as a constant (detached).
        beta: perturbation strength ``> 0`` (code units; reference default 2.0, whose single draws
            have targets -1 and 2, see the module docstring).
        expected: use the deterministic expected target instead of a random draw.
        generator: ``torch.Generator`` (CPU) that draws whether each image is perturbed; required
            unless ``expected=True``. No global random state is used.
        weight: optional per-pixel weight broadcastable to ``target.shape`` (mmseg's ``seg_weight``).
        ignore_index: label value of pixels that take no part in the loss.
        reduction: ``'mean'`` (over non-ignored pixels), ``'sum'`` or ``'none'`` (``(N, *spatial)``
            map with zeros at ignored pixels).
        avg_factor: denominator of ``'mean'`` instead of the number of non-ignored pixels.
        soft_target: optional ``(N, *spatial)`` soft targets in ``[0, 1]`` replacing the labels' 0/1 values
            (a constant: no gradient flows into it).

    Returns:
        Scalar loss (``(N, *spatial)`` for ``reduction='none'``).

    Raises:
        ValueError: on ``beta <= 0``, ``alpha`` outside ``[0, 1/(2 beta)]`` or of the wrong shape, a
            multi-channel head (``C > 1``), labels outside ``{0, 1, ignore_index}``, a missing
            ``generator`` in stochastic mode, a bad ``reduction``, or a bad ``soft_target``
            (:func:`check_soft_target`).
        TypeError: if ``logits`` is not floating point, ``target`` not integer or ``soft_target`` not floating
            point.

    Example:
        >>> logits, labels = torch.zeros(2, 1, 4, 4), torch.ones(2, 4, 4, dtype=torch.long)
        >>> gen = torch.Generator().manual_seed(0)
        >>> loss = scbce_loss(logits, labels, alpha=0.1, beta=2.0, generator=gen)
        >>> smooth = scbce_loss(logits, labels, alpha=0.1, beta=2.0, expected=True)
    """
    check_reduction(reduction, avg_factor)
    beta = validate_scbce_args(beta=beta)['beta']
    if not isinstance(expected, bool):
        raise ValueError(f'expected must be a bool, got {expected!r}')
    pixels = _binary_pixels(logits, target, ignore_index, weight)
    z = pixels.logits[:, 0]
    alpha = _alpha_per_image(alpha, beta, z.shape[0], z)
    y = pixels.target
    if soft_target is not None:
        y = check_soft_target(soft_target, target, pixels.valid.reshape(target.shape)).reshape(y.shape)
    y_tilde = scbce_targets(y, alpha, beta=beta, expected=expected, generator=generator)
    pixel_loss = F.softplus(z) - y_tilde * z
    return reduce_loss(pixel_loss, pixels, reduction=reduction, avg_factor=avg_factor)
