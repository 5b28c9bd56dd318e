"""The one base class of calibseg's registered losses: name, weight, reduction, ignore index."""
from typing import Dict, Optional, Sequence, Union

import numpy as np
from mmseg.models.losses.utils import get_class_weight
from torch import Tensor, nn

from calibseg.functional.losses.utils import check_class_weight, check_ignore_index, check_reduction
from calibseg.utils.validation import check_finite

ClassWeightConfig = Optional[Union[Sequence[float], np.ndarray, str]]
"""``class_weight`` in a config: ``None``, one weight per class, or a path (``.npy``, or a
``.pkl``/``.json``/``.yaml`` file that mmengine can load), as in mmseg's ``CrossEntropyLoss``."""


class CalibrationLossBase(nn.Module):
    """Shared plumbing of calibseg's mmseg losses; subclasses only add options and :meth:`compute`.

    A subclass validates its options in ``__init__`` with the same function its pure loss uses, stores
    them with :meth:`_set_options`, and implements :meth:`compute` as one call of the pure function.
    Everything mmseg needs lives here:

    * the call signature of mmseg's decode heads,
      ``loss(seg_logits, seg_label, weight=seg_weight, ignore_index=head.ignore_index)``, plus
      ``avg_factor`` and ``reduction_override``, all keyword-only; unknown keywords raise
      ``TypeError`` (mmseg's own ``CrossEntropyLoss`` also rejects them, through its criterion);
    * ``ignore_index``: the call argument when given (decode heads always pass theirs), else the
      module's own (default 255), so a head and its loss cannot disagree silently;
    * ``loss_weight`` multiplies the result; ``loss_name`` must start with ``loss_`` (mmseg only
      back-propagates dict entries whose key contains ``loss``; losses of one name are summed);
    * ``class_weight`` is read once (list, array or file) and kept as a non-persistent buffer, so it
      follows ``.to(device)`` and stays out of checkpoints.

    'mean' always averages over the non-ignored pixels (mmseg's ``avg_non_ignore=True``).

    ``accepts_soft_target`` (class attribute, ``False`` here) says whether ``forward`` takes
    ``soft_target=<(N, H, W) float tensor>``, soft targets in ``[0, 1]`` beside the labels (the segmentors that
    train on soft saliency masks refuse every loss without it).

    Args:
        loss_name: key of the loss in mmseg's loss dict; must start with ``'loss_'``.
        loss_weight: factor applied to the loss.
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        ignore_index: label ignored when the caller passes none.
        class_weight: per-class weights (see :data:`ClassWeightConfig`) or ``None``.

    Raises:
        ValueError: on a bad ``loss_name``, ``loss_weight``, ``reduction``, ``ignore_index`` or
            ``class_weight``.
    """

    accepts_soft_target: bool = False

    def __init__(self, *, loss_name: str, loss_weight: float = 1.0, reduction: str = 'mean',
                 ignore_index: int = 255, class_weight: ClassWeightConfig = None) -> None:
        super().__init__()
        if not isinstance(loss_name, str) or not loss_name.startswith('loss_'):
            raise ValueError(f"loss_name must be a str starting with 'loss_' (mmseg only "
                             f'back-propagates such entries), got {loss_name!r}')
        self._loss_name = loss_name
        self.loss_weight = check_finite('loss_weight', loss_weight)
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_ignore_index(ignore_index)
        weights = check_class_weight(get_class_weight(class_weight))
        self.register_buffer('class_weight', None if weights is None else weights.float(),
                             persistent=False)
        self._option_names = ()

    @property
    def loss_name(self) -> str:
        """Key of this loss in mmseg's loss dict."""
        return self._loss_name

    def _set_options(self, options: Dict[str, float]) -> None:
        """Store validated method options as attributes (read by :meth:`compute` on every call)."""
        for name, value in options.items():
            setattr(self, name, value)
        self._option_names = tuple(options)

    def forward(self, seg_logits: Tensor, seg_label: Tensor, *, weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = None, avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None) -> Tensor:
        """Compute the weighted loss.

        Args:
            seg_logits: ``(N, C, H, W)`` logits (already resized to the label size by the head).
            seg_label: ``(N, H, W)`` integer labels.
            weight: optional ``(N, H, W)`` per-pixel weight (mmseg's ``seg_weight``).
            ignore_index: label to ignore; ``None`` uses the module's ``ignore_index``.
            avg_factor: denominator of ``'mean'`` instead of the number of non-ignored pixels.
            reduction_override: replaces the module's ``reduction`` for this call.

        Returns:
            ``loss_weight`` times the loss (a scalar, or ``(N, H, W)`` for ``'none'``).
        """
        reduction = self.reduction if reduction_override is None \
            else check_reduction(reduction_override)
        ignore_index = self.ignore_index if ignore_index is None else ignore_index
        loss = self.compute(seg_logits, seg_label, weight=weight, class_weight=self.class_weight,
                            ignore_index=ignore_index, reduction=reduction, avg_factor=avg_factor)
        return self.loss_weight * loss

    def compute(self, seg_logits: Tensor, seg_label: Tensor, **common) -> Tensor:
        """Call the pure loss with this module's options and ``common`` (weight, class_weight,
        ignore_index, reduction, avg_factor)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        options = [f'{name}={getattr(self, name)!r}' for name in self._option_names]
        options += [f'loss_name={self.loss_name!r}', f'loss_weight={self.loss_weight!r}',
                    f'reduction={self.reduction!r}', f'ignore_index={self.ignore_index!r}']
        if self.class_weight is not None:
            options.append(f'class_weight={self.class_weight.tolist()!r}')
        return ', '.join(options)
