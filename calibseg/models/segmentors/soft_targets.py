"""Soft saliency targets in training: the segmentor hands ``data_sample.gt_soft_mask`` to every loss of its heads.

The ASLP reference code (Liu et al., "Model Calibration in Dense Classification with Adaptive Label Perturbation",
ICCV 2023) trains SC-BCE on the grey-level masks resized bilinearly and divided by 255, never thresholded.
calibseg's default trains on the binarised masks (``LoadBinaryAnnotations``, ``> 128``); this module is the other
route. mmseg's decode heads give their losses ``(seg_logits, seg_label)`` only, with ``seg_label`` stacked from the
int64 ``gt_sem_seg``, so soft targets go round the head's ``loss``: the segmentor runs the head's ``forward``, then
:func:`head_losses`, which is mmseg's ``BaseDecodeHead.loss_by_feat`` (stack the labels, resize the logits
bilinearly to them, the sampler's weights, the losses summed by name) with ``soft_target=<(N, H, W)>`` given to
every loss, and the accuracy of a one-channel head (``sigmoid > threshold``) as ``acc_seg``.

Data: ``LoadBinaryAnnotations(soft=True)`` -> ``SoftMaskResize`` (for resizes) -> ``PackSaliencyInputs``
(``calibseg/datasets/transforms``). The binarised labels still mark the ignored pixels and give ``acc_seg``;
evaluation never sees the soft masks (test pipelines do not load them, and the metrics read ``gt_sem_seg`` only).

Config (SC-BCE with a fixed alpha on soft targets)::

    model = dict(type='SoftTargetEncoderDecoder', decode_head=dict(out_channels=1, loss_decode=dict(
        type='SCBCELoss', beta=2.0, alpha=0.025, seed=0)), auxiliary_head=dict(out_channels=1, loss_decode=dict(
        type='SCBCELoss', alpha=0.0, expected=True, loss_weight=0.4, loss_name='loss_bce')), ...)

ASLP takes the same route with ``ASLPEncoderDecoder(soft_targets=True)``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import add_prefix
from torch import Tensor, nn

from ...datasets.transforms.load_binary_annotations import SOFT_MASK_KEY

__all__ = ['SoftTargetMixin', 'SoftTargetEncoderDecoder', 'HeadLosses', 'head_losses', 'head_loss_modules',
           'check_soft_target_head', 'stack_soft_targets', 'one_channel_accuracy']

LossKwargs = Callable[[nn.Module], Dict[str, Any]]
"""Extra keyword arguments for one loss module's call (e.g. ASLP's per-image ``alpha``)."""


class HeadLosses(NamedTuple):
    """What :func:`head_losses` computed, for callers that need more than the loss dict.

    Attributes:
        losses: the head's loss dict (unprefixed), with ``acc_seg``.
        seg_logits: ``(N, 1, H, W)`` logits resized to the labels.
        seg_label: ``(N, H, W)`` int64 labels (binarised, ``ignore_index`` where padded).
        soft_target: ``(N, H, W)`` soft targets, or ``None`` without soft targets.
    """

    losses: Dict[str, Tensor]
    seg_logits: Tensor
    seg_label: Tensor
    soft_target: Optional[Tensor]


def head_loss_modules(head: nn.Module) -> List[nn.Module]:
    """The loss modules of a decode head (``loss_decode``, a module or a ``ModuleList``)."""
    losses = head.loss_decode
    return list(losses) if isinstance(losses, nn.ModuleList) else [losses]


def check_soft_target_head(head: Any, where: str) -> None:
    """Refuse a head that cannot train on soft targets through :func:`head_losses` (``ValueError``, naming
    ``where``): not one mmseg decode head, more than one output channel, its own ``loss``/``loss_by_feat``, or a
    loss without ``accepts_soft_target``."""
    if not isinstance(head, BaseDecodeHead):
        raise ValueError(f'{where}: soft targets need an mmseg decode head, got {type(head).__name__}')
    if head.out_channels != 1:
        raise ValueError(f'{where}: soft targets are foreground probabilities of a one-channel (sigmoid) head: '
                         f'out_channels=1, num_classes=2; got out_channels={head.out_channels}')
    cls = type(head)
    if cls.loss is not BaseDecodeHead.loss or cls.loss_by_feat is not BaseDecodeHead.loss_by_feat:
        raise ValueError(f"{where}: {cls.__name__} computes its losses its own way (it overrides mmseg's "
                         'loss/loss_by_feat), so soft targets cannot be handed to them')
    for loss in head_loss_modules(head):
        if not getattr(loss, 'accepts_soft_target', False):
            raise ValueError(f'{where}: {type(loss).__name__} ({getattr(loss, "loss_name", "?")}) cannot take soft '
                             'targets; losses that can: SCBCELoss (alpha=0.0, expected=True is plain BCE). Or train '
                             'on binarised masks: LoadBinaryAnnotations without soft=True and a segmentor without '
                             'soft targets')


def stack_soft_targets(data_samples: Sequence[Any], shape: Tuple[int, int], device: torch.device) -> Tensor:
    """``data_sample.gt_soft_mask`` of every sample as one ``(N, H, W)`` float32 tensor on ``device``.

    A mask smaller than ``shape`` (the stacked labels: mmseg's data preprocessor pads ``gt_sem_seg`` at the bottom
    and right but not this field) is padded there with 0, at pixels the padded labels ignore.

    Raises:
        ValueError: naming the image, on a sample without ``gt_soft_mask`` (the pipeline must load it with
            ``LoadBinaryAnnotations(soft=True)`` and pack it with ``PackSaliencyInputs``), or a mask that is not
            ``(1, h, w)`` with ``h <= H`` and ``w <= W``.
    """
    height, width = int(shape[0]), int(shape[1])
    maps = []
    for sample in data_samples:
        name = sample.metainfo.get('img_path', '?') if hasattr(sample, 'metainfo') else '?'
        if SOFT_MASK_KEY not in sample:
            raise ValueError(f'soft targets: the data sample of {name} has no {SOFT_MASK_KEY}; the training pipeline '
                             "must load masks with dict(type='LoadBinaryAnnotations', soft=True) and pack them with "
                             "dict(type='PackSaliencyInputs') (mmseg's PackSegInputs drops the soft mask)")
        soft = sample.get(SOFT_MASK_KEY).data
        if soft.dim() != 3 or soft.shape[0] != 1 or soft.shape[1] > height or soft.shape[2] > width:
            raise ValueError(f'soft targets: {SOFT_MASK_KEY} of {name} has shape {tuple(soft.shape)}, expected '
                             f'(1, h, w) within the labels ({height}, {width})')
        soft = soft.to(device=device, dtype=torch.float32)
        maps.append(F.pad(soft[0], (0, width - soft.shape[2], 0, height - soft.shape[1]), value=0.0))
    if not maps:
        return torch.zeros((0, height, width), dtype=torch.float32, device=device)
    return torch.stack(maps)


@torch.no_grad()
def one_channel_accuracy(seg_logits: Tensor, seg_label: Tensor, *, threshold: float, ignore_index: int) -> Tensor:
    """Pixel accuracy in percent of a one-channel head, with mmseg's prediction rule ``sigmoid(z) > threshold``,
    over the pixels whose label is not ``ignore_index`` (a float32 scalar)."""
    valid = seg_label != ignore_index
    pred = seg_logits[:, 0].sigmoid() > threshold
    correct = ((pred.long() == seg_label) & valid).sum()
    return 100.0 * correct.to(torch.float32) / valid.sum().clamp(min=1).to(torch.float32)


def head_losses(head: BaseDecodeHead, seg_logits: Tensor, data_samples: Sequence[Any], *, soft_targets: bool,
                loss_kwargs: Optional[LossKwargs] = None) -> HeadLosses:
    """mmseg's ``BaseDecodeHead.loss_by_feat`` for a one-channel head, optionally with soft targets.

    Stacks the labels, resizes ``seg_logits`` (the head's ``forward`` output) bilinearly to them, takes the
    sampler's weights, calls every loss as ``loss(seg_logits, seg_label, weight=..., ignore_index=...,
    **loss_kwargs(loss))`` plus ``soft_target=`` with ``soft_targets`` (losses of one name are summed), and adds
    ``acc_seg`` (:func:`one_channel_accuracy`).
    """
    seg_label = head._stack_batch_gt(data_samples)
    seg_logits = resize(seg_logits, size=seg_label.shape[2:], mode='bilinear', align_corners=head.align_corners)
    seg_weight = head.sampler.sample(seg_logits, seg_label) if head.sampler is not None else None
    seg_label = seg_label.squeeze(1)
    soft = stack_soft_targets(data_samples, seg_label.shape[1:], seg_label.device) if soft_targets else None
    losses: Dict[str, Tensor] = {}
    for loss_module in head_loss_modules(head):
        kwargs = dict(loss_kwargs(loss_module)) if loss_kwargs is not None else {}
        if soft is not None:
            kwargs['soft_target'] = soft
        value = loss_module(seg_logits, seg_label, weight=seg_weight, ignore_index=head.ignore_index, **kwargs)
        name = loss_module.loss_name
        losses[name] = losses[name] + value if name in losses else value
    losses['acc_seg'] = one_channel_accuracy(seg_logits, seg_label, threshold=head.threshold,
                                             ignore_index=head.ignore_index)
    return HeadLosses(losses, seg_logits, seg_label, soft)


class SoftTargetMixin:
    """Train an ``EncoderDecoder`` subclass's decode and auxiliary heads on soft targets (module docstring).

    A subclass calls :meth:`_init_soft_targets` at the end of its ``__init__``; with ``soft_targets=False`` every
    method falls through to mmseg's.
    """

    soft_targets: bool = False

    def _init_soft_targets(self, soft_targets: bool) -> None:
        if not isinstance(soft_targets, bool):
            raise ValueError(f'soft_targets must be a bool, got {soft_targets!r}')
        self.soft_targets = soft_targets
        if not soft_targets:
            return
        name = type(self).__name__
        check_soft_target_head(self.decode_head, f'{name} (soft targets): the decode head')
        for prefix, head in self._auxiliary_heads():
            check_soft_target_head(head, f'{name} (soft targets): the auxiliary head {prefix}')

    def _auxiliary_heads(self) -> List[Tuple[str, nn.Module]]:
        """``(loss prefix, head)`` of every auxiliary head, with mmseg's prefixes (``aux`` or ``aux_<i>``)."""
        if not getattr(self, 'with_auxiliary_head', False):
            return []
        if isinstance(self.auxiliary_head, nn.ModuleList):
            return [(f'aux_{i}', head) for i, head in enumerate(self.auxiliary_head)]
        return [('aux', self.auxiliary_head)]

    def _decode_head_forward_train(self, inputs: List[Tensor], data_samples: list) -> Dict[str, Tensor]:
        if not self.soft_targets:
            return super()._decode_head_forward_train(inputs, data_samples)  # type: ignore[misc]
        head = self.decode_head
        return add_prefix(head_losses(head, head.forward(inputs), data_samples, soft_targets=True).losses, 'decode')

    def _auxiliary_head_forward_train(self, inputs: List[Tensor], data_samples: list) -> Dict[str, Tensor]:
        if not self.soft_targets:
            return super()._auxiliary_head_forward_train(inputs, data_samples)  # type: ignore[misc]
        losses: Dict[str, Tensor] = {}
        for prefix, head in self._auxiliary_heads():
            out = head_losses(head, head.forward(inputs), data_samples, soft_targets=True)
            losses.update(add_prefix(out.losses, prefix))
        return losses


@MODELS.register_module()
class SoftTargetEncoderDecoder(SoftTargetMixin, EncoderDecoder):
    """mmseg's ``EncoderDecoder`` trained on soft saliency targets (module docstring); testing is unchanged.

    Every loss of the decode and auxiliary heads gets ``soft_target=`` (``data_sample.gt_soft_mask``) beside the
    binarised labels; the heads must be one-channel and their losses accept soft targets (``SCBCELoss``).

    Args:
        as mmseg's ``EncoderDecoder``.

    Raises:
        ValueError: at construction, on a head or loss that cannot train on soft targets
            (:func:`check_soft_target_head`); in training, on a batch without soft masks
            (:func:`stack_soft_targets`).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_soft_targets(True)
