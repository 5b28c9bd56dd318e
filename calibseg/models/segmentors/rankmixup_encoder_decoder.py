"""RankMixup training (Noh et al., ICCV 2023) for any mmseg encoder-decoder: a segmentor with its own train_step.

Config: take any ``EncoderDecoder`` config and change two things::

    model = dict(type='RankMixupEncoderDecoder',
                 rankmixup=dict(mode='mrl', alpha=2.0, margin=1.0, loss_weight=0.1, num_mixups=1, seed=0))
    model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')  # needed under DDP only, harmless otherwise

One training step (single process, or under ``TrainStepDelegatingDDP``):

1. ``data_preprocessor`` (normalise, pad, stack);
2. ``T`` mixup draws (``T = num_mixups``), each ``lambda_t ~ Beta(alpha, alpha)`` shared by the batch and a
   random permutation ``pi_t`` of the batch, from a ``torch.Generator`` the model owns;
3. *one* forward call through the DDP wrapper (``self.loss_forward``) that runs, inside the module,
   (a) the raw batch: backbone, decode head, the decode head's own losses (``loss_by_feat``: whatever
   ``loss_decode`` the config names, CE in our configs) and the auxiliary heads' losses;
   (b) the mixed batch ``lambda_t x + (1 - lambda_t) x[pi_t]`` of all ``T`` draws concatenated (``T * B``
   images): backbone and decode head only, no label loss;
   (c) both logit maps resized to the label size and the ranking loss (MRL or M-NDCG,
   :mod:`calibseg.functional.losses.rankmixup`), logged as ``loss_mrl`` / ``loss_mndcg`` with its
   ``loss_weight`` applied, and the mean ``lambda`` as ``mixup_lambda``;
4. one optimiser update of the sum.

Choices where the paper (classification) is silent:

* **DDP.** Both passes run inside *one* forward call of the DDP wrapper, so DDP's reducer sees one forward
  per backward (two forward calls through the wrapper before one backward are not supported without
  ``static_graph``); parameters used by both passes simply accumulate their gradients before DDP reduces them.
* **BatchNorm.** The raw and the mixed batch are separate passes (not one concatenated batch of ``(1 + T) B``),
  so the CE pass normalises with the statistics of raw images only, exactly as plain CE training does, and the
  ranking pass with those of mixed images; this is what the authors' code does (two calls of the network in
  train mode). Running statistics are therefore updated twice per step, the second time from mixed images
  (as in the code). The FLOPs are the same as for one concatenated pass.
* **Randomness.** ``rankmixup.seed`` (default 0) seeds the model's generator, the same on every rank, so all
  ranks draw the same ``lambda`` sequence (the global batch shares one ``lambda`` per draw, as one batch does in
  the paper) and the same permutation pattern of their local batch (images are paired within a rank). The
  generator state is part of the model's ``state_dict`` (``_extra_state``), so a resumed run continues the
  exact sequence of draws.
* **Pixels.** Per-pixel ranking, masks and averaging as documented in :mod:`calibseg.functional.losses.rankmixup`.

The segmentor refuses to compute its training loss through the plain ``mode='loss'`` path while training:
mmengine's ``MMDistributedDataParallel.train_step`` takes that path and would silently train CE only.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Optional

import torch
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig, SampleList, add_prefix
from torch import Tensor, nn

from calibseg.functional.losses.rankmixup import SAME_LABEL_MODES, mndcg_loss, mrl_loss
from calibseg.functional.mixup import MixupDraw, check_mixup_alpha, draw_mixup, mix_images
from calibseg.models.wrappers import DelegatedTrainStepMixin

__all__ = ['RankMixupEncoderDecoder', 'parse_rankmixup_cfg']

MODES = ('mrl', 'mndcg')
_KEYS = ('mode', 'alpha', 'margin', 'loss_weight', 'num_mixups', 'seed', 'same_label')


def _error(key: str, message: str) -> ValueError:
    return ValueError(f'model.rankmixup.{key} {message}')


def _finite_non_negative(cfg: Dict[str, Any], key: str, default: float) -> float:
    value = cfg.get(key, default)
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise _error(key, f'must be a finite number >= 0, got {value!r}')
    return float(value)


def parse_rankmixup_cfg(cfg: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Validate ``model.rankmixup`` and fill in the defaults.

    Keys: ``mode`` (``'mrl'`` or ``'mndcg'``, required), ``alpha`` (Beta(a, a) shape, ``> 0``, default 2.0),
    ``margin`` (MRL only, ``>= 0``, default 1.0), ``loss_weight`` (``>= 0``, default 0.1), ``num_mixups`` (MRL:
    1; M-NDCG: ``>= 2``, default 3), ``seed`` (int ``>= 0``, default 0), ``same_label`` (M-NDCG only: ``'keep'``,
    the default and the authors' rule, ranks a mixup whose two sources share the pixel's label with relevance 1;
    ``'mask'`` removes it from that pixel's list).

    Raises:
        ValueError: naming the offending key (unknown keys included).
    """
    if cfg is None:
        raise ValueError("model.rankmixup is required, e.g. rankmixup=dict(mode='mrl') or dict(mode='mndcg')")
    if not isinstance(cfg, dict):
        raise ValueError(f'model.rankmixup must be a dict, got {type(cfg).__name__}')
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise ValueError(f'model.rankmixup has unknown keys {unknown}; allowed: {list(_KEYS)}')
    mode = cfg.get('mode')
    if mode not in MODES:
        raise _error('mode', f'must be one of {MODES}, got {mode!r}')
    try:
        alpha = check_mixup_alpha('model.rankmixup.alpha', cfg.get('alpha', 2.0))
    except ValueError as err:
        raise ValueError(str(err)) from None
    out = dict(mode=mode, alpha=alpha, loss_weight=_finite_non_negative(cfg, 'loss_weight', 0.1))
    num_mixups = cfg.get('num_mixups', 1 if mode == 'mrl' else 3)
    if not isinstance(num_mixups, int) or isinstance(num_mixups, bool):
        raise _error('num_mixups', f'must be an int, got {num_mixups!r}')
    if mode == 'mrl':
        if num_mixups != 1:
            raise _error('num_mixups', f"must be 1 for mode='mrl' (MRL ranks one mixup against the raw image), "
                                       f"got {num_mixups}; use mode='mndcg' for several mixups")
        out['margin'] = _finite_non_negative(cfg, 'margin', 1.0)
    else:
        if num_mixups < 2:
            raise _error('num_mixups', f"must be >= 2 for mode='mndcg' (it ranks several mixups; the paper "
                                       f"uses 3), got {num_mixups}; use mode='mrl' for one mixup")
        if 'margin' in cfg:
            raise _error('margin', "applies to mode='mrl' only (M-NDCG has no margin); remove it")
        same_label = cfg.get('same_label', 'keep')
        if same_label not in SAME_LABEL_MODES:
            raise _error('same_label', f'must be one of {SAME_LABEL_MODES}, got {same_label!r}')
        out['same_label'] = same_label
    if mode == 'mrl' and 'same_label' in cfg:
        raise _error('same_label', "applies to mode='mndcg' only (MRL always masks same-label pairs); remove it")
    out['num_mixups'] = num_mixups
    seed = cfg.get('seed', 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _error('seed', f'must be an int >= 0, got {seed!r}')
    out['seed'] = seed
    return out


@MODELS.register_module()
class RankMixupEncoderDecoder(DelegatedTrainStepMixin, EncoderDecoder):
    """``EncoderDecoder`` trained with RankMixup (see the module docstring).

    Args:
        backbone, decode_head, neck, auxiliary_head, train_cfg, test_cfg, data_preprocessor, pretrained,
            init_cfg: as in mmseg's ``EncoderDecoder``.
        rankmixup: the method's options, see :func:`parse_rankmixup_cfg`.

    Inference (``predict``, ``tensor``) is ``EncoderDecoder``'s, unchanged.

    Raises:
        ValueError: on a bad ``rankmixup`` dict, a decode head with fewer than 2 output channels, or a decode
            head whose ``loss`` is not ``forward`` + ``loss_by_feat`` (the raw logits are reused for ranking).
    """

    def __init__(self, backbone: ConfigType, decode_head: ConfigType, neck: OptConfigType = None,
                 auxiliary_head: OptConfigType = None, train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None, data_preprocessor: OptConfigType = None,
                 pretrained: Optional[str] = None, init_cfg: OptMultiConfig = None,
                 rankmixup: Optional[Dict[str, Any]] = None) -> None:
        options = parse_rankmixup_cfg(rankmixup)  # before building anything: a bad key fails fast
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck, auxiliary_head=auxiliary_head,
                         train_cfg=train_cfg, test_cfg=test_cfg, data_preprocessor=data_preprocessor,
                         pretrained=pretrained, init_cfg=init_cfg)
        head = self.decode_head
        if type(head).loss is not BaseDecodeHead.loss:
            raise ValueError(f'RankMixupEncoderDecoder reuses the decode head\'s logits (forward + loss_by_feat); '
                             f'{type(head).__name__} overrides loss() and is not supported')
        if head.out_channels < 2:
            raise ValueError(f'RankMixupEncoderDecoder needs a softmax decode head (out_channels >= 2), got '
                             f'{type(head).__name__} with out_channels={head.out_channels}')
        self.mode: str = options['mode']
        self.mixup_alpha: float = options['alpha']
        self.margin: Optional[float] = options.get('margin')
        self.rank_loss_weight: float = options['loss_weight']
        self.num_mixups: int = options['num_mixups']
        self.same_label: Optional[str] = options.get('same_label')
        self.mixup_seed: int = options['seed']
        self.mixup_generator = torch.Generator().manual_seed(self.mixup_seed)
        self._announced_delegation = False

    # ------------------------------------------------------------------ state (generator in checkpoints)
    def get_extra_state(self) -> Tensor:
        """The mixup generator's state (a uint8 tensor), saved with the weights as ``<prefix>_extra_state``.

        A plain tensor, not a dict: mmengine broadcasts every ``state_dict`` value as a tensor under DDP.
        """
        return self.mixup_generator.get_state()

    def set_extra_state(self, state: Tensor) -> None:
        self.mixup_generator.set_state(state.cpu())

    # ------------------------------------------------------------------ training
    def draw_mixup(self, batch_size: int) -> MixupDraw:
        """The next ``num_mixups`` draws from the model's generator."""
        return draw_mixup(batch_size, self.num_mixups, self.mixup_alpha, self.mixup_generator)

    def train_step(self, data: Any, optim_wrapper: OptimWrapper,
                   ddp_wrapper: Optional[nn.Module] = None) -> Dict[str, Tensor]:
        """Preprocess, draw the mixups, one forward (raw + mixed passes) through DDP if any, one update."""
        if ddp_wrapper is not None and not self._announced_delegation:
            print_log('RankMixupEncoderDecoder: train_step delegated by the DDP wrapper '
                      f'{type(ddp_wrapper).__name__} (RankMixup active under DDP)', logger='current')
            self._announced_delegation = True
        with self.optim_context(optim_wrapper, ddp_wrapper):
            data = self.data_preprocessor(data, True)
            draw = self.draw_mixup(data['inputs'].shape[0])
            losses = self.loss_forward(
                dict(inputs=data['inputs'], data_samples=data['data_samples'], mixup=draw), ddp_wrapper)
        parsed, log_vars = self.parse_losses(losses)
        optim_wrapper.update_params(parsed)
        log_vars['mixup_lambda'] = draw.lams.mean().to(torch.float32)
        return log_vars

    def forward(self, inputs: Tensor, data_samples: Optional[SampleList] = None, mode: str = 'tensor',
                mixup: Optional[MixupDraw] = None):
        """``EncoderDecoder.forward``; with ``mixup`` (``mode='loss'`` only) the RankMixup training losses."""
        if mixup is None:
            return super().forward(inputs, data_samples, mode)
        if mode != 'loss':
            raise ValueError(f"mixup draws are only used with mode='loss', got mode={mode!r}")
        return self.rankmixup_loss(inputs, data_samples, mixup)

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """The plain label losses; refused in training mode, where RankMixup's own step must run."""
        if self.training:
            raise RuntimeError(
                "RankMixupEncoderDecoder's training loss needs its own train_step, which was bypassed (mmengine's "
                "MMDistributedDataParallel.train_step calls forward(mode='loss') directly and would train CE "
                "only). Set model_wrapper_cfg=dict(type='TrainStepDelegatingDDP') in the config.")
        return super().loss(inputs, data_samples)

    def rankmixup_loss(self, inputs: Tensor, data_samples: SampleList, draw: MixupDraw) -> Dict[str, Tensor]:
        """Label losses of the raw batch plus the weighted ranking loss of the mixed batch(es)."""
        batch = inputs.shape[0]
        if draw.num_mixups != self.num_mixups or draw.permutations.shape[1] != batch:
            raise ValueError(f'expected {self.num_mixups} mixup draw(s) for a batch of {batch}, got lams of '
                             f'{tuple(draw.lams.shape)} and permutations of {tuple(draw.permutations.shape)}')
        feats = self.extract_feat(inputs)
        raw_logits = self.decode_head(feats)
        losses = add_prefix(self.decode_head.loss_by_feat(raw_logits, data_samples), 'decode')
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(feats, data_samples))

        mixed_logits = self.decode_head(self.extract_feat(mix_images(inputs, draw)))
        target = self._stack_labels(data_samples)
        raw_logits = self._to_label_size(raw_logits, target)
        mixed_logits = self._to_label_size(mixed_logits, target)
        ignore_index = self.decode_head.ignore_index
        if self.mode == 'mrl':
            value = mrl_loss(raw_logits, mixed_logits, target, draw.permutations[0], margin=self.margin,
                             ignore_index=ignore_index)
        else:
            value = mndcg_loss(raw_logits, mixed_logits.unflatten(0, (self.num_mixups, batch)), target,
                               draw.permutations, draw.lams, same_label=self.same_label, ignore_index=ignore_index)
        losses[f'loss_{self.mode}'] = self.rank_loss_weight * value
        return losses

    @staticmethod
    def _stack_labels(data_samples: SampleList) -> Tensor:
        labels: List[Tensor] = [sample.gt_sem_seg.data for sample in data_samples]
        return torch.stack(labels).squeeze(1).long()

    def _to_label_size(self, logits: Tensor, target: Tensor) -> Tensor:
        if logits.shape[-2:] == target.shape[-2:]:
            return logits
        return resize(logits, size=target.shape[-2:], mode='bilinear', align_corners=self.decode_head.align_corners)
