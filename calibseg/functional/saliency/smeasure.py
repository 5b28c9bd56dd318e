"""Structure measure (S-measure) of a saliency map (Fan et al., ICCV 2017)."""
import math

import torch
from torch import Tensor

from calibseg.utils.validation import check_in_range

from .common import EPS, check_saliency_pair


def _object_similarity(values: Tensor) -> Tensor:
    r""":math:`2\bar x / (\bar x^2 + 1 + \sigma_x)` over the pixels of one region (sample std)."""
    mean = values.mean()
    std = values.std() if values.numel() > 1 else values.new_zeros(())
    return 2.0 * mean / (mean * mean + 1.0 + std + EPS)


def _object_score(pred: Tensor, gt: Tensor) -> Tensor:
    r"""Object-aware similarity :math:`S_o = \mu O_{FG} + (1 - \mu) O_{BG}`, :math:`\mu` = foreground share."""
    mu = gt.to(pred.dtype).mean()
    fg = _object_similarity(pred[gt])
    bg = _object_similarity(1.0 - pred[~gt])
    return mu * fg + (1.0 - mu) * bg


def _ssim(pred: Tensor, gt: Tensor) -> float:
    """Single-window SSIM of one block, as in the authors' code (sample statistics, ``eps`` guards)."""
    n = pred.numel()
    x, y = pred.mean(), gt.mean()
    dx, dy = pred - x, gt - y
    denom = n - 1 + EPS
    var_x, var_y, cov = (dx * dx).sum() / denom, (dy * dy).sum() / denom, (dx * dy).sum() / denom
    a = float(4.0 * x * y * cov)
    b = float((x * x + y * y) * (var_x + var_y))
    if a != 0:
        return a / (b + EPS)
    return 1.0 if b == 0 else 0.0


def _centroid(gt: Tensor) -> tuple:
    """1-based centroid ``(X, Y)`` of the foreground, rounded half away from zero (MATLAB ``round``)."""
    h, w = gt.shape
    g = gt.to(torch.float64)
    total = g.sum()
    cols = torch.arange(1, w + 1, dtype=torch.float64)
    rows = torch.arange(1, h + 1, dtype=torch.float64)
    x = math.floor(float((g.sum(0) * cols).sum() / total) + 0.5)
    y = math.floor(float((g.sum(1) * rows).sum() / total) + 0.5)
    return x, y


def _region_score(pred: Tensor, gt: Tensor) -> Tensor:
    r"""Region-aware similarity :math:`S_r = \sum_{j=1}^4 w_j\,\mathrm{ssim}_j` over the 4 centroid blocks."""
    h, w = gt.shape
    x, y = _centroid(gt)
    g = gt.to(pred.dtype)
    area = float(h * w)
    blocks = (((0, y), (0, x)), ((0, y), (x, w)), ((y, h), (0, x)), ((y, h), (x, w)))
    score = pred.new_zeros(())
    for (r0, r1), (c0, c1) in blocks:
        if r1 <= r0 or c1 <= c0:
            continue  # empty block: zero weight
        weight = (r1 - r0) * (c1 - c0) / area
        score = score + weight * _ssim(pred[r0:r1, c0:c1], g[r0:r1, c0:c1])
    return score


def smeasure(pred: Tensor, gt: Tensor, *, alpha: float = 0.5) -> Tensor:
    r"""Structure measure of one foreground-probability map.

    .. math::
        S = \max\big(0,\ \alpha\,S_o + (1 - \alpha)\,S_r\big)

    * object-aware :math:`S_o = \mu\,O_{FG} + (1 - \mu)\,O_{BG}`, with :math:`\mu` the foreground
      share of :math:`G`, :math:`O_{FG} = 2\bar x/(\bar x^2 + 1 + \sigma_x)` over :math:`x = p` on the
      foreground and :math:`O_{BG}` the same over :math:`x = 1 - p` on the background (:math:`\sigma`
      the sample standard deviation);
    * region-aware :math:`S_r = \sum_j w_j\,\mathrm{ssim}(p_j, g_j)`: the maps are split into 4 blocks at
      the foreground centroid (1-based, rounded as MATLAB does), :math:`w_j` the block's share of the
      image, :math:`\mathrm{ssim} = 4\bar x\bar y\sigma_{xy} / ((\bar x^2 + \bar y^2)(\sigma_x^2 + \sigma_y^2))`
      (1 when numerator and denominator are both 0);
    * an all-background ground truth gives :math:`S = 1 - \bar p`, an all-foreground one :math:`S = \bar p`.

    Fan, Cheng, Liu, Li and Borji, "Structure-measure: A New Way to Evaluate Foreground Maps", ICCV
    2017, following the authors' MATLAB code (``eps`` guards included).

    Args:
        pred: ``(H, W)`` foreground probabilities in ``[0, 1]``.
        gt: ``(H, W)`` ground truth in ``{0, 1}``.
        alpha: weight of the object-aware term in ``[0, 1]`` (0.5 in the paper).

    Returns:
        float64 scalar tensor in ``[0, 1]``.
    """
    check_in_range('alpha', alpha, 0.0, 1.0, high_inclusive=True)
    pred, gt = check_saliency_pair(pred, gt)
    return smeasure_checked(pred, gt, alpha=alpha)


def smeasure_checked(pred: Tensor, gt: Tensor, *, alpha: float = 0.5) -> Tensor:
    """:func:`smeasure` on an already validated pair (float64 ``pred``, bool ``gt``)."""
    share = float(gt.to(torch.float64).mean())
    if share == 0.0:
        return 1.0 - pred.mean()
    if share == 1.0:
        return pred.mean()
    score = alpha * _object_score(pred, gt) + (1.0 - alpha) * _region_score(pred, gt)
    return score.clamp(min=0.0)
