"""F-measure curve of a saliency map over 256 thresholds (Achanta et al., CVPR 2009)."""
from torch import Tensor

from calibseg.utils.validation import check_positive_float

from .common import check_saliency_pair, threshold_counts


def fmeasure_from_counts(tp: Tensor, fp: Tensor, num_fg: int, *, beta_sq: float = 0.3) -> Tensor:
    r"""F-measure per threshold from the counts of :func:`~calibseg.functional.saliency.common.threshold_counts`.

    .. math::
        P_k = \frac{TP_k}{TP_k + FP_k}, \quad R_k = \frac{TP_k}{|G|}, \quad
        F_k = \frac{(1 + \beta^2) P_k R_k}{\beta^2 P_k + R_k}

    with :math:`P_k = 0` when nothing is predicted foreground, :math:`R_k = 0` when the ground truth
    is empty, and :math:`F_k = 0` when :math:`P_k R_k = 0` (the conventions of the public evaluation
    code).
    """
    predicted = tp + fp
    precision = tp / predicted.clamp(min=1)
    recall = tp / max(int(num_fg), 1)
    numerator = (1.0 + beta_sq) * precision * recall
    denominator = beta_sq * precision + recall
    return numerator / denominator.masked_fill(numerator == 0, 1.0)


def fmeasure_curve(pred: Tensor, gt: Tensor, *, beta_sq: float = 0.3) -> Tensor:
    r"""F-measure of one image at each of the 256 thresholds.

    The map is binarised at :math:`p \ge k/255` for :math:`k = 0, \dots, 255` (see
    :mod:`calibseg.functional.saliency.common`) and compared with the ground truth :math:`G`:

    .. math::
        F^\beta_k = \frac{(1 + \beta^2)\, P_k R_k}{\beta^2 P_k + R_k}, \qquad \beta^2 = 0.3

    Dataset max-F and mean-F: average the curves over images, then take the maximum / the mean over
    thresholds. Achanta, Hemami, Estrada and Süsstrunk, "Frequency-tuned Salient Region Detection",
    CVPR 2009 (:math:`\beta^2 = 0.3`).

    Args:
        pred: ``(H, W)`` foreground probabilities in ``[0, 1]``.
        gt: ``(H, W)`` ground truth in ``{0, 1}``.
        beta_sq: :math:`\beta^2 > 0`, the weight of precision.

    Returns:
        ``(256,)`` float64 tensor, index ``k`` = threshold ``k/255``.
    """
    check_positive_float('beta_sq', beta_sq)
    pred, gt = check_saliency_pair(pred, gt)
    tp, fp = threshold_counts(pred, gt)
    return fmeasure_from_counts(tp, fp, int(gt.sum()), beta_sq=beta_sq)
