"""Mean absolute error of a saliency map (Perazzi et al., CVPR 2012)."""
from torch import Tensor

from .common import check_saliency_pair


def mae(pred: Tensor, gt: Tensor) -> Tensor:
    r"""Mean absolute error between a foreground-probability map and its binary ground truth.

    .. math::
        \mathrm{MAE} = \frac{1}{HW}\sum_{x, y} |p(x, y) - g(x, y)|

    Perazzi, Krähenbühl, Pritch and Hornung, "Saliency Filters: Contrast Based Filtering for Salient
    Region Detection", CVPR 2012. Dataset MAE is the mean of the per-image values.

    Args:
        pred: ``(H, W)`` foreground probabilities in ``[0, 1]``.
        gt: ``(H, W)`` ground truth in ``{0, 1}``.

    Returns:
        float64 scalar tensor in ``[0, 1]``.
    """
    pred, gt = check_saliency_pair(pred, gt)
    return (pred - gt.to(pred.dtype)).abs().mean()
