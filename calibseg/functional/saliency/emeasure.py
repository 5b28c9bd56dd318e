"""Enhanced-alignment measure (E-measure) curve over 256 thresholds (Fan et al., IJCAI 2018)."""
from torch import Tensor

from .common import EPS, check_saliency_pair, threshold_counts


def emeasure_from_counts(tp: Tensor, fp: Tensor, num_fg: int, num_pixels: int) -> Tensor:
    r"""E-measure per threshold from the counts of :func:`~calibseg.functional.saliency.common.threshold_counts`.

    A binary map :math:`B` and the ground truth :math:`G` take 4 value pairs, so the enhanced
    alignment matrix has 4 distinct values, weighted by the pixel counts TP, FP, FN, TN (see
    :func:`emeasure_curve` for the formula).
    """
    n = float(num_pixels)
    g = float(num_fg)
    if g == 0:  # empty ground truth: the enhanced matrix is 1 - B
        return (n - tp - fp) / n
    if g == n:  # full ground truth: the enhanced matrix is B
        return (tp + fp) / n
    mean_b = (tp + fp) / n
    mean_g = g / n
    total = tp.new_zeros(tp.shape)
    parts = ((tp, 1.0, True), (fp, 1.0, False), (g - tp, 0.0, True), (n - g - fp, 0.0, False))
    for count, b_value, g_fg in parts:
        phi_b = b_value - mean_b
        phi_g = (1.0 if g_fg else 0.0) - mean_g
        align = 2.0 * phi_b * phi_g / (phi_b * phi_b + phi_g * phi_g + EPS)
        total = total + count * (align + 1.0) ** 2 / 4.0
    return total / n


def emeasure_curve(pred: Tensor, gt: Tensor) -> Tensor:
    r"""E-measure of one image at each of the 256 thresholds.

    For the map binarised at threshold :math:`k` (:math:`B = [p \ge k/255]`) and the ground truth
    :math:`G`, with bias matrices :math:`\varphi_I = I - \mu_I \mathbf{1}`:

    .. math::
        \xi = \frac{2\,\varphi_G \circ \varphi_B}{\varphi_G \circ \varphi_G + \varphi_B \circ \varphi_B},
        \qquad \phi = \frac{(1 + \xi)^2}{4}, \qquad
        E_k = \frac{1}{HW}\sum_{x, y} \phi(x, y)

    with :math:`\phi = 1 - B` for an empty and :math:`\phi = B` for a full ground truth. Dataset mean
    and max E-measure: average the curves over images, then the mean / the maximum over thresholds.
    Fan, Gong, Cao, Ren, Cheng and Borji, "Enhanced-alignment Measure for Binary Foreground Map
    Evaluation", IJCAI 2018.

    Normalisation: the paper's :math:`1/(HW)`. The authors' MATLAB code and ``pysodmetrics`` divide
    by :math:`HW - 1` instead, which scales every value by :math:`HW/(HW - 1)` (``1 + 8e-6`` for a
    300x400 image) and lets a perfect map score slightly above 1.

    Args:
        pred: ``(H, W)`` foreground probabilities in ``[0, 1]``.
        gt: ``(H, W)`` ground truth in ``{0, 1}``.

    Returns:
        ``(256,)`` float64 tensor in ``[0, 1]``, index ``k`` = threshold ``k/255``.
    """
    pred, gt = check_saliency_pair(pred, gt)
    tp, fp = threshold_counts(pred, gt)
    return emeasure_from_counts(tp, fp, int(gt.sum()), gt.numel())
