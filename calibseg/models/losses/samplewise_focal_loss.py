"""Registered softmax focal loss whose γ is given per pixel or per image at each call (γ-Net)."""
from contextlib import contextmanager
from typing import Iterator, Optional

from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses import softmax_focal_loss

from .base import CalibrationLossBase, ClassWeightConfig

__all__ = ['SampleWiseFocalLoss']


@MODELS.register_module()
class SampleWiseFocalLoss(CalibrationLossBase):
    r"""Softmax focal loss with a sample-wise focusing parameter supplied by the model at every step.

    .. math::
        \mathrm{FL} = \frac{1}{P}\sum_{n} -c_{y_n}\,(1 - p_{n,y_n})^{\gamma_n} \log p_{n,y_n}

    over the ``P`` non-ignored pixels, with ``γ_n`` taken from the tensor set by :meth:`gamma_context`
    (a per-pixel map or one value per image; :class:`~calibseg.models.segmentors.GammaNetEncoderDecoder` sets
    it from its γ-Net). The loss is differentiable w.r.t. that tensor (γ-Net's look-ahead needs it). Calling
    the loss outside a :meth:`gamma_context` raises: no silent fallback to a constant γ.

    Args:
        class_weight: per-class weights ``c_k`` (list, array or file path) or ``None``.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Example:
        >>> import torch
        >>> logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
        >>> loss = SampleWiseFocalLoss()
        >>> with loss.gamma_context(torch.zeros(2, 1, 1)):  # one γ per image, or an (N, H, W) map
        ...     value = loss(logits, labels)
        >>> torch.allclose(value, torch.nn.functional.cross_entropy(logits, labels))  # γ = 0: cross-entropy
        True
    """

    def __init__(self, *, class_weight: ClassWeightConfig = None, reduction: str = 'mean',
                 loss_weight: float = 1.0, ignore_index: int = 255, loss_name: str = 'loss_focal') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=class_weight)
        self._gamma: Optional[Tensor] = None

    @contextmanager
    def gamma_context(self, gamma: Tensor) -> Iterator[None]:
        """Use ``gamma`` (a float tensor broadcastable to the ``(N, H, W)`` labels, values ``>= 0``) inside."""
        if not isinstance(gamma, Tensor) or not gamma.is_floating_point():
            raise TypeError(f'gamma must be a floating-point tensor, got {type(gamma).__name__}')
        previous, self._gamma = self._gamma, gamma
        try:
            yield
        finally:
            self._gamma = previous

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        if self._gamma is None:
            raise RuntimeError('SampleWiseFocalLoss was called without a gamma: it only works inside '
                               'gamma_context(), which GammaNetEncoderDecoder opens around its decode head\'s '
                               "loss; for a constant gamma use type='SoftmaxFocalLoss'")
        return softmax_focal_loss(seg_logits, seg_label, gamma=self._gamma, **common)

    def extra_repr(self) -> str:
        return 'gamma=<set per step>, ' + super().extra_repr()
