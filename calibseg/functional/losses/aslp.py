r"""Adaptive stochastic label perturbation (ASLP): the per-image update of SC-BCE's :math:`\alpha_i`.

Liu, Ye, Wang, Cui, Zhang, Zhang and Barnes, "Model Calibration in Dense Classification with
Adaptive Label Perturbation", ICCV 2023. Every training image :math:`i` has its own perturbation
probability :math:`\alpha_i` (:math:`\alpha_0 = 0`) for :func:`~calibseg.functional.losses.scbce.scbce_loss`.
After each optimisation step from the first update epoch on, for every image of the batch:

.. math::
    \mathrm{BCE}_i = \operatorname{mean}_n\big[-y_n\log p_n - (1 - y_n)\log(1 - p_n)\big], \qquad
    \mathrm{CAL}_i = \operatorname{mean}_n\big[-\log\big(p_n(1 - p_n)\big)\big]

.. math::
    \alpha_i \leftarrow \operatorname{clip}\Big(\alpha_i + \eta\Big[\frac{\mathrm{CAL}_i - 2\,\mathrm{BCE}_i}{\beta}
        + \lambda\min\big((1 - \mathrm{acc}_\mathrm{val}) - \beta\alpha_i,\ 0\big)\Big],\
        0,\ \frac{1}{2\beta} - m\Big)

with :math:`p` the foreground probabilities of the same forward pass (detached), :math:`y` the
*original* (unperturbed) target, :math:`\mathrm{acc}_\mathrm{val}` the pixel accuracy on a held-out part of
the training set measured at the end of the previous epoch, and the reference code's defaults
(code units of :mod:`calibseg.functional.losses.scbce`): :math:`\beta = 2`, :math:`\eta = 0.002`,
:math:`\lambda = 2000`, margin :math:`m = 0.01`.

The first term is the reference code's: the exact derivative of the expected SC-BCE with respect to
:math:`\alpha_i` is :math:`\beta(\mathrm{CAL}_i - 2\,\mathrm{BCE}_i)`; dividing by :math:`\beta` instead
makes it an ascent direction towards maximum entropy scaled by :math:`1/\beta^2`. The second term
pushes :math:`\alpha_i` down whenever the expected target confidence :math:`1 - \beta\alpha_i` falls
below the validation accuracy.

Two documented details of the reference code:

* it clamps :math:`p` to :math:`[10^{-7}, 1 - 10^{-7}]` before taking logarithms. Here the statistics
  are computed from the logits (``softplus``, exact in float64) after clamping the logits to the same
  range (:math:`|z| \le \log\frac{1 - \epsilon}{\epsilon}`, monotone, so identical to clamping
  :math:`p`), ``prob_clamp=0`` disables it;
* it keeps a new value in :math:`[1/(2\beta) - m, 1/(2\beta))` unclipped; here the clip to
  :math:`[0, 1/(2\beta) - m]` is applied as written in the paper's rule.

This module imports no OpenMMLab package.
"""
import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from calibseg.utils.validation import check_finite, check_in_range, check_non_negative

from .scbce import check_soft_target, validate_scbce_args
from .utils import check_ignore_index, flat_size

__all__ = ['ASLPStatistics', 'aslp_alpha_max', 'aslp_image_statistics', 'aslp_alpha_update',
           'validate_aslp_args']


class ASLPStatistics(NamedTuple):
    """Per-image statistics of one batch (float64, detached).

    Attributes:
        bce: ``(N,)`` mean binary cross-entropy against the original target.
        cal: ``(N,)`` mean :math:`-\\log(p(1 - p))`.
        num_pixels: ``(N,)`` number of non-ignored pixels (an image without any has ``bce = cal = 0``
            and must not be updated).
    """

    bce: Tensor
    cal: Tensor
    num_pixels: Tensor


def aslp_alpha_max(beta: float, margin: float = 0.01) -> float:
    """Upper clip of :math:`\\alpha`: ``1 / (2 beta) - margin`` (raises if it is not positive)."""
    beta = validate_scbce_args(beta=beta)['beta']
    margin = check_non_negative('alpha_margin', margin)
    high = 1.0 / (2.0 * beta) - margin
    if not high > 0:
        raise ValueError(f'alpha_margin={margin:g} leaves no room for alpha with beta={beta:g}: '
                         f'1/(2*beta) - alpha_margin = {high:g} must be > 0')
    return high


def validate_aslp_args(*, beta: float, eta: float, lam: float, alpha_margin: float, prob_clamp: float) -> dict:
    """Check the ASLP hyper-parameters; return them as floats plus ``alpha_max``.

    Raises:
        ValueError: naming the bad argument and its value.
    """
    eta = check_non_negative('eta', eta)
    lam = check_non_negative('lam', lam)
    prob_clamp = check_in_range('prob_clamp', prob_clamp, 0.0, 0.5, high_inclusive=False)
    alpha_max = aslp_alpha_max(beta, alpha_margin)
    return dict(beta=float(beta), eta=eta, lam=lam, alpha_margin=float(alpha_margin), prob_clamp=prob_clamp,
                alpha_max=alpha_max)


@torch.no_grad()
def aslp_image_statistics(logits: Tensor, target: Tensor, *, ignore_index: int = 255,
                          prob_clamp: float = 1e-7, soft_target: Optional[Tensor] = None) -> ASLPStatistics:
    r"""Per-image :math:`\mathrm{BCE}_i` and :math:`\mathrm{CAL}_i` of a one-channel head (module docstring).

    With ``soft_target`` the original target :math:`y` of :math:`\mathrm{BCE}_i` is the soft value in ``[0, 1]``
    (the reference code trains on resized grey masks and takes this BCE against them); ``target`` then only says
    which pixels are ignored.

    Args:
        logits: ``(N, 1, *spatial)`` logits (detached here).
        target: ``(N, *spatial)`` original labels in ``{0, 1}`` or ``ignore_index``.
        ignore_index: label of pixels left out of both means.
        prob_clamp: clamp :math:`p` to ``[prob_clamp, 1 - prob_clamp]`` (reference code: 1e-7); 0 = none.
        soft_target: optional ``(N, *spatial)`` soft targets in ``[0, 1]`` replacing the labels' 0/1 values.

    Returns:
        :class:`ASLPStatistics` in float64.

    Raises:
        ValueError: on a multi-channel head, mismatched shapes, labels outside ``{0, 1, ignore_index}``, or a bad
            ``soft_target`` (:func:`~calibseg.functional.losses.scbce.check_soft_target`).
    """
    ignore_index = check_ignore_index(ignore_index)
    prob_clamp = check_in_range('prob_clamp', prob_clamp, 0.0, 0.5, high_inclusive=False)
    if logits.dim() < 2 or logits.shape[1] != 1:
        raise ValueError(f'ASLP statistics need one-channel logits of shape (N, 1, *spatial), got '
                         f'{tuple(logits.shape)}')
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f'target must have shape (N, *spatial) = {tuple(logits.shape[:1] + logits.shape[2:])}, '
                         f'got {tuple(target.shape)}')
    batch = logits.shape[0]
    size = flat_size(target.shape[1:])
    z = logits.detach().reshape(batch, size).to(torch.float64)
    y = target.detach().reshape(batch, size)
    valid = y != ignore_index
    bad = valid & (y != 0) & (y != 1)
    if bool(bad.any()):
        raise ValueError(f'target must hold 0, 1 or ignore_index={ignore_index}, got '
                         f'{torch.unique(y[bad]).tolist()[:10]}')
    if prob_clamp > 0:
        limit = math.log((1.0 - prob_clamp) / prob_clamp)
        z = z.clamp(-limit, limit)
    if soft_target is None:
        y = y.to(torch.float64).masked_fill(~valid, 0.0)
    else:
        y = check_soft_target(soft_target, target, valid.reshape(target.shape)).reshape(batch, size)
        y = y.to(torch.float64)
    # -log p = softplus(-z), -log(1 - p) = softplus(z)
    bce = F.softplus(z) - y * z
    cal = F.softplus(z) + F.softplus(-z)
    count = valid.sum(dim=1)
    denom = count.clamp(min=1).to(torch.float64)
    weight = valid.to(torch.float64)
    return ASLPStatistics((bce * weight).sum(dim=1) / denom, (cal * weight).sum(dim=1) / denom, count)


def aslp_alpha_update(alpha: Tensor, bce: Tensor, cal: Tensor, *, acc_val: float, beta: float = 2.0,
                      eta: float = 0.002, lam: float = 2000.0, alpha_max: float = 0.24) -> Tensor:
    r"""One ASLP step for the images of a batch (module docstring); returns the new :math:`\alpha`.

    Args:
        alpha: ``(N,)`` current :math:`\alpha_i`.
        bce: ``(N,)`` :math:`\mathrm{BCE}_i` (from :func:`aslp_image_statistics`).
        cal: ``(N,)`` :math:`\mathrm{CAL}_i`.
        acc_val: validation pixel accuracy in ``[0, 1]``.
        beta, eta, lam: SC-BCE strength (code units), step size and accuracy-constraint weight.
        alpha_max: upper clip, ``1 / (2 beta) - margin`` (:func:`aslp_alpha_max`).

    Returns:
        ``(N,)`` float64 tensor clipped to ``[0, alpha_max]``.

    Example:
        >>> aslp_alpha_update(torch.zeros(1), torch.tensor([0.1]), torch.tensor([1.5]), acc_val=0.9)
        tensor([0.0013], dtype=torch.float64)
    """
    acc_val = check_in_range('acc_val', check_finite('acc_val', acc_val), 0.0, 1.0, high_inclusive=True)
    if not (alpha.shape == bce.shape == cal.shape) or alpha.dim() != 1:
        raise ValueError(f'alpha, bce and cal must be (N,) tensors of one shape, got {tuple(alpha.shape)}, '
                         f'{tuple(bce.shape)}, {tuple(cal.shape)}')
    alpha = alpha.detach().to(torch.float64)
    entropy_term = (cal.to(torch.float64) - 2.0 * bce.to(torch.float64)) / beta
    accuracy_term = lam * torch.clamp_max((1.0 - acc_val) - beta * alpha, 0.0)
    return (alpha + eta * (entropy_term + accuracy_term)).clamp(0.0, alpha_max)
