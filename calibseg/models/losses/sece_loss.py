"""Registered SECE loss: the differentiable smooth calibration error of a batch of pixels."""
from typing import Optional

import torch
from mmseg.registry import MODELS
from torch import Tensor, nn

from calibseg.functional.losses.sece import sece_loss, validate_sece_loss_args
from calibseg.functional.losses.utils import check_ignore_index
from calibseg.utils.validation import check_finite, check_int

__all__ = ['SECELoss']


@MODELS.register_module()
class SECELoss(nn.Module):
    r"""Gaussian-kernel smooth calibration error (SECE) of the pixels of a batch, as a loss.

    .. math::
        \mathrm{SECE} = \frac1P \sum_i |\hat a(c_i) - c_i|,\qquad
        \hat a(c) = \frac{\sum_j K_h(c - c_j)\,a_j}{\sum_j K_h(c - c_j)}

    with ``c_i`` the top-label softmax confidence and ``a_i`` the correctness of the ``P`` non-ignored pixels
    (see :func:`calibseg.functional.losses.sece.sece_loss`). γ-Net's meta objective (Wang & Golebiowski, TMLR
    2024) and usable as an extra term of any decode head (``loss_decode=[dict(type='CrossEntropyLoss', ...),
    dict(type='SECELoss', loss_weight=...)]``). SECE is a statistic of the whole batch: there is no
    ``reduction`` and no per-pixel ``weight``.

    Args:
        bandwidth: ``h`` of the Gaussian kernel (default 0.05, calibseg's choice; the paper's value is unknown).
        method: ``'auto'``, ``'exact'`` or ``'grid'`` evaluation (see :func:`calibseg.functional.calibration.sece`).
        max_pixels: evaluate on a random subset of at most this many non-ignored pixels (bounds the memory of
            the softmax over a large batch; the grid evaluation itself is ``O(P)``); ``None`` uses every pixel.
        seed: seed of the module's own CPU ``torch.Generator`` that draws the subsets (the global RNG is not
            touched); successive calls draw different subsets, reproducibly.
        loss_weight: factor applied to the loss.
        ignore_index: label ignored when the caller passes none (decode heads pass theirs).
        loss_name: key in mmseg's loss dict; must start with ``'loss_'``.

    Example:
        >>> decode_head = dict(loss_decode=[dict(type='CrossEntropyLoss', avg_non_ignore=True),
        ...                                 dict(type='SECELoss', loss_weight=1.0)])
        >>> from mmseg.registry import MODELS
        >>> [MODELS.build(cfg).loss_name for cfg in decode_head['loss_decode']]
        ['loss_ce', 'loss_sece']
    """

    def __init__(self, *, bandwidth: float = 0.05, method: str = 'auto', max_pixels: Optional[int] = None,
                 seed: int = 0, loss_weight: float = 1.0, ignore_index: int = 255,
                 loss_name: str = 'loss_sece') -> None:
        super().__init__()
        validate_sece_loss_args(bandwidth=bandwidth, method=method, max_pixels=max_pixels)
        if not isinstance(loss_name, str) or not loss_name.startswith('loss_'):
            raise ValueError(f"loss_name must be a str starting with 'loss_' (mmseg only back-propagates such "
                             f'entries), got {loss_name!r}')
        self.bandwidth = float(bandwidth)
        self.method = method
        self.max_pixels = max_pixels
        self.seed = check_int('seed', seed)
        self.loss_weight = check_finite('loss_weight', loss_weight)
        self.ignore_index = check_ignore_index(ignore_index)
        self._loss_name = loss_name
        self._generator: Optional[torch.Generator] = None

    @property
    def loss_name(self) -> str:
        """Key of this loss in mmseg's loss dict."""
        return self._loss_name

    def forward(self, seg_logits: Tensor, seg_label: Tensor, *, weight: Optional[Tensor] = None,
                ignore_index: Optional[int] = None) -> Tensor:
        """``loss_weight`` times the SECE of the batch.

        Args:
            seg_logits: ``(N, C, H, W)`` logits (already resized to the label size by the head).
            seg_label: ``(N, H, W)`` integer labels.
            weight: must be ``None`` (SECE is not a sum of per-pixel terms; mmseg passes a pixel sampler's weights
                here).
            ignore_index: label to ignore; ``None`` uses the module's ``ignore_index``.
        """
        if weight is not None:
            raise ValueError('SECELoss takes no per-pixel weight (it is a statistic of the whole batch); '
                             'remove the decode head\'s pixel sampler or use another loss')
        generator = None
        if self.max_pixels is not None:
            if self._generator is None:
                self._generator = torch.Generator().manual_seed(self.seed)
            generator = self._generator
        value = sece_loss(seg_logits, seg_label, bandwidth=self.bandwidth, method=self.method,
                          ignore_index=self.ignore_index if ignore_index is None else ignore_index,
                          max_pixels=self.max_pixels, generator=generator)
        return self.loss_weight * value

    def extra_repr(self) -> str:
        return (f'bandwidth={self.bandwidth!r}, method={self.method!r}, max_pixels={self.max_pixels!r}, '
                f'seed={self.seed!r}, loss_name={self.loss_name!r}, loss_weight={self.loss_weight!r}, '
                f'ignore_index={self.ignore_index!r}')
