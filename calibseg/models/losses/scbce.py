"""Registered self-calibrating binary cross-entropy (SC-BCE) for one-channel decode heads."""
from typing import Optional, Union

import torch
from mmengine.dist import get_rank
from mmseg.registry import MODELS
from torch import Tensor

from calibseg.functional.losses.scbce import AlphaLike, scbce_loss, validate_scbce_args
from calibseg.functional.losses.utils import check_reduction
from calibseg.utils.validation import check_int

from .base import CalibrationLossBase


@MODELS.register_module()
class SCBCELoss(CalibrationLossBase):
    r"""SC-BCE for mmseg one-channel heads (``out_channels=1``, ``num_classes=2``).

    Per image :math:`i`, with probability :math:`\alpha_i` the whole target map becomes
    :math:`(1 - 2\beta)y + \beta`, else it stays :math:`y`; the loss is binary cross-entropy with
    logits against that target, averaged over the non-ignored pixels of the batch. In expectation
    this is label smoothing with :math:`\varepsilon_i = 2\alpha_i\beta`. Liu et al., "Model
    Calibration in Dense Classification with Adaptive Label Perturbation", ICCV 2023.

    **Parametrisation:** ``beta`` is the reference code's :math:`\beta_\text{code}` (default 2.0,
    target :math:`(1 - 2\beta)y + \beta`); the paper's figures use
    :math:`\beta_\text{paper} = 2\beta` (paper "β=1.0" is ``beta=0.5`` here). ``alpha`` must lie in
    :math:`[0, 1/(2\beta)]`. With ``beta=2`` one draw's targets are -1 and 2 and a perturbed image's
    loss is unbounded below; only the expectation is a bounded, label-smoothed BCE (see
    :mod:`calibseg.functional.losses.scbce`).

    Two modes:

    * fixed: ``alpha=<float>`` at construction, the same probability for every image;
    * adaptive (ASLP): ``alpha=None`` here and a ``(N,)`` tensor of per-image values passed as
      ``forward(..., alpha=...)`` on every call. A per-call ``alpha`` always takes precedence over
      the constructor's. mmseg's decode heads never pass ``alpha``, so in adaptive mode whatever
      owns the per-image state must call the loss itself.

    **Soft targets**: ``forward(..., soft_target=<(N, H, W) tensor in [0, 1]>)`` replaces the labels' 0/1 values
    by the soft values (the labels still mark the ignored pixels); the segmentors that train on soft saliency
    masks (``SoftTargetEncoderDecoder``, ``ASLPEncoderDecoder(soft_targets=True)``) pass it. With
    ``alpha=0.0, expected=True`` this is plain BCE against the soft target.

    Randomness comes only from this module's own CPU ``torch.Generator``, seeded with
    ``seed + rank`` (mmengine's rank, so that data-parallel ranks draw independently); with
    ``seed=None`` it is seeded from the operating system's entropy (not reproducible). The generator
    state is not part of the ``state_dict``: a resumed run restarts the stream from the seed.

    Args:
        beta: perturbation strength ``> 0`` in code units (default 2.0, the reference code's).
        alpha: fixed perturbation probability in ``[0, 1/(2 beta)]``, or ``None`` for adaptive mode
            (then every call needs ``alpha``).
        expected: use the deterministic expected target (label smoothing with ``2 alpha beta``)
            instead of random draws.
        seed: seed of the module's generator, or ``None`` for an OS-entropy seed.
        reduction, loss_weight, ignore_index, loss_name: see
            :class:`~calibseg.models.losses.base.CalibrationLossBase`.

    Raises:
        ValueError: on ``beta <= 0``, ``alpha`` outside ``[0, 1/(2 beta)]``, a non-bool
            ``expected``, a non-int ``seed``, or the base class's options.

    Example:
        >>> decode_head = dict(num_classes=2, out_channels=1, threshold=0.5,
        ...                    loss_decode=dict(type='SCBCELoss', beta=2.0, alpha=0.1, seed=0))
        >>> from mmseg.registry import MODELS
        >>> MODELS.build(decode_head['loss_decode']).loss_name
        'loss_scbce'
    """

    accepts_soft_target = True

    def __init__(self, *, beta: float = 2.0, alpha: Optional[float] = None, expected: bool = False,
                 seed: Optional[int] = None, reduction: str = 'mean', loss_weight: float = 1.0,
                 ignore_index: int = 255, loss_name: str = 'loss_scbce') -> None:
        super().__init__(loss_name=loss_name, loss_weight=loss_weight, reduction=reduction,
                         ignore_index=ignore_index, class_weight=None)
        if not isinstance(expected, bool):
            raise ValueError(f'expected must be a bool, got {expected!r}')
        seed = check_int('seed', seed, allow_none=True)
        options = validate_scbce_args(beta=beta, alpha=alpha)
        self._set_options(dict(beta=options['beta'], alpha=options['alpha'], expected=expected,
                               seed=seed))
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed) + get_rank())

    def forward(self, seg_logits: Tensor, seg_label: Tensor, weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = None, alpha: Optional[AlphaLike] = None,
                avg_factor: Optional[Union[float, Tensor]] = None,
                reduction_override: Optional[str] = None, soft_target: Optional[Tensor] = None) -> Tensor:
        """Compute the weighted SC-BCE.

        Args:
            seg_logits: ``(N, 1, H, W)`` logits (already resized to the label size by the head).
            seg_label: ``(N, H, W)`` labels in ``{0, 1}`` or ``ignore_index``.
            weight: optional ``(N, H, W)`` per-pixel weight (mmseg's ``seg_weight``).
            ignore_index: label to ignore; ``None`` uses the module's ``ignore_index`` (255).
            alpha: per-call perturbation probability (number or ``(N,)`` tensor); ``None`` uses the
                constructor's ``alpha``.
            avg_factor: denominator of ``'mean'`` instead of the number of non-ignored pixels.
            reduction_override: replaces the module's ``reduction`` for this call.
            soft_target: optional ``(N, H, W)`` soft targets in ``[0, 1]`` used instead of the labels' 0/1
                values (the labels still mark the ignored pixels).

        Returns:
            ``loss_weight`` times the loss.

        Raises:
            ValueError: if neither this call nor the constructor gives ``alpha``, or on bad inputs
                (see :func:`~calibseg.functional.losses.scbce.scbce_loss`).
        """
        if alpha is None:
            alpha = self.alpha
        if alpha is None:
            raise ValueError('SCBCELoss was built with alpha=None (adaptive mode): pass the per-image '
                             'alpha=<(N,) tensor> on every call, or build it with a fixed alpha=<float>')
        reduction = self.reduction if reduction_override is None else check_reduction(reduction_override)
        ignore_index = self.ignore_index if ignore_index is None else ignore_index
        loss = self.compute(seg_logits, seg_label, alpha=alpha, weight=weight, ignore_index=ignore_index,
                            reduction=reduction, avg_factor=avg_factor, soft_target=soft_target)
        return self.loss_weight * loss

    def compute(self, seg_logits: Tensor, seg_label: Tensor, *, alpha: AlphaLike,  # type: ignore[override]
                **common) -> Tensor:
        """One call of :func:`~calibseg.functional.losses.scbce.scbce_loss` with this module's options."""
        common.pop('class_weight', None)
        return scbce_loss(seg_logits, seg_label, alpha=alpha, beta=self.beta, expected=self.expected,
                          generator=self.generator, **common)
