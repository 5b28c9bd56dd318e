"""Per-image saliency records and their dataset summary (MAE, max/mean F, S, mean/max E).

The records are small (two 256-value curves and two scalars per image), so a metric can keep one per
sample and merge them at the end; every dataset number is computed once, from all records.

This module imports no OpenMMLab package.
"""
from typing import Dict, Mapping, Sequence

import torch
from torch import Tensor

from calibseg.utils.validation import check_in_range, check_positive_float

from .common import check_saliency_pair, minmax_rescale, threshold_counts
from .emeasure import emeasure_from_counts
from .fmeasure import fmeasure_from_counts
from .smeasure import smeasure_checked

SALIENCY_KEYS = ('MAE', 'maxF', 'meanF', 'Sm', 'meanEm', 'maxEm')
"""Keys of :func:`summarize_saliency`, in reporting order."""


def saliency_record(pred: Tensor, gt: Tensor, *, beta_sq: float = 0.3, sm_alpha: float = 0.5,
                    minmax_normalize: bool = False) -> Dict[str, Tensor]:
    """Everything the dataset summary needs from one image.

    Args:
        pred: ``(H, W)`` foreground probabilities in ``[0, 1]`` (any finite values with
            ``minmax_normalize=True``).
        gt: ``(H, W)`` ground truth in ``{0, 1}``.
        beta_sq: :math:`\\beta^2` of the F-measure (0.3).
        sm_alpha: object/region balance of the S-measure (0.5).
        minmax_normalize: rescale ``pred`` to ``[0, 1]`` per image first, as the public saliency
            evaluation code does (off by default: it changes the probabilities).

    Returns:
        ``dict(mae=scalar, sm=scalar, f_curve=(256,), e_curve=(256,))``, float64 CPU tensors.

    Raises:
        ValueError: on invalid inputs or options (see
            :func:`~calibseg.functional.saliency.common.check_saliency_pair`).
    """
    check_positive_float('beta_sq', beta_sq)
    sm_alpha = check_in_range('sm_alpha', sm_alpha, 0.0, 1.0, high_inclusive=True)
    pred, gt = check_saliency_pair(pred, gt, probabilities=not minmax_normalize)
    pred = pred.cpu()
    gt = gt.cpu()
    if minmax_normalize:
        pred = minmax_rescale(pred)
    tp, fp = threshold_counts(pred, gt)
    num_fg = int(gt.sum())
    return dict(
        mae=(pred - gt.to(pred.dtype)).abs().mean(),
        sm=smeasure_checked(pred, gt, alpha=sm_alpha),
        f_curve=fmeasure_from_counts(tp, fp, num_fg, beta_sq=float(beta_sq)),
        e_curve=emeasure_from_counts(tp, fp, num_fg, gt.numel()),
    )


def summarize_saliency(records: Sequence[Mapping[str, Tensor]]) -> Dict[str, float]:
    """Dataset measures from per-image records (:func:`saliency_record`).

    MAE and S-measure are means over images; the F- and E-measure curves are averaged over images
    first, then ``maxF``/``maxEm`` take their maximum and ``meanF``/``meanEm`` their mean over the 256
    thresholds.

    Returns:
        ``{'MAE', 'maxF', 'meanF', 'Sm', 'meanEm', 'maxEm'}`` as floats in ``[0, 1]`` (unrounded).

    Raises:
        ValueError: if ``records`` is empty.
    """
    if len(records) == 0:
        raise ValueError('records is empty: no image was evaluated')
    f_curve = torch.stack([torch.as_tensor(r['f_curve'], dtype=torch.float64) for r in records]).mean(0)
    e_curve = torch.stack([torch.as_tensor(r['e_curve'], dtype=torch.float64) for r in records]).mean(0)
    mae = torch.stack([torch.as_tensor(r['mae'], dtype=torch.float64) for r in records]).mean()
    sm = torch.stack([torch.as_tensor(r['sm'], dtype=torch.float64) for r in records]).mean()
    return dict(MAE=float(mae), maxF=float(f_curve.max()), meanF=float(f_curve.mean()), Sm=float(sm),
                meanEm=float(e_curve.mean()), maxEm=float(e_curve.max()))
