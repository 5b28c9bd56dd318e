r"""γ-Net meta-regularisation (Wang & Golebiowski, TMLR 2024) for any mmseg encoder-decoder.

A γ-Net (:class:`~calibseg.models.utils.GammaNet`) reads the features of the decode head's
classifier and outputs a sample-wise focal-loss γ; the network trains with that focal loss
(``loss_decode=dict(type='SampleWiseFocalLoss')``) and γ-Net trains to make a one-step look-ahead of the
classifier well calibrated on held-out images (the meta objective CE + SECE), as in Meta-Calibration (Bohdal et
al.), which the method extends. Config::

    model = dict(
        type='GammaNetEncoderDecoder',
        decode_head=dict(loss_decode=dict(_delete_=True, type='SampleWiseFocalLoss')),
        gamma_net=dict(per='pixel', hidden=64, gamma_max=5.0, init_gamma=3.0),
        meta=dict(dataloader=dict(batch_size=8, dataset=dict(type='HeldOutSplit', part='held_out', ...)),
                  lr_lookahead=None, sece_bandwidth=0.05, sece_weight=1.0,
                  optimizer=dict(type='Adam', lr=1e-3), grad_clip=2.0))
    train_dataloader = dict(dataset=dict(type='HeldOutSplit', part='train', ...))  # same split, other part
    model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')  # needed under DDP, harmless otherwise

One training step (:meth:`GammaNetEncoderDecoder.train_step`), on the unwrapped module except step 4:

1. the next meta batch from ``meta.dataloader`` (:class:`MetaBatchStream`); both batches through the
   ``data_preprocessor``;
2. look-ahead: without gradients (and without touching BatchNorm running statistics), the features ``f`` that
   ``decode_head.conv_seg`` reads, for the training and the meta batch; then, with the graph kept,
   ``w' = w - lr * d/dw L_train(w, γ)`` for the classifier ``w = conv_seg`` (``torch.func.functional_call``),
   where ``γ = γ-Net(f_train)`` and ``L_train`` is the decode head's own loss (``loss_by_feat``: the sample-wise
   focal loss, resized logits, the head's ``ignore_index`` and weights);
3. meta update: ``L_meta = CE(w'; meta) + sece_weight * SECE(w'; meta)`` over the non-ignored meta pixels,
   ``dL_meta/dθ`` for γ-Net's parameters θ (through ``w'``), averaged over ranks by an all-reduce (γ-Net is kept
   out of DDP), clipped to ``grad_clip`` (total L2 norm) and applied by γ-Net's own optimiser (Adam, lr 1e-3);
4. network update: ``self.loss_forward`` (through the DDP wrapper when there is one) with the head's focal γ from
   the *updated* γ-Net (detached), then ``optim_wrapper.update_params``.

The log holds ``gamma_mean`` and ``gamma_std`` (of the γ used in step 4 over the non-ignored pixels),
``meta_ce``, ``meta_sece`` and ``meta_objective``; with ``meta.check_sync=True`` also ``gamma_net_rank_diff``
(largest difference between any rank's γ-Net parameters and rank 0's; 0 when in sync) and ``delegated_steps``.

Checkpoints: γ-Net's parameters (``gamma_net.*``), its optimiser's per-parameter state
(``meta_optimizer_state.<index>.<name>``, see :class:`OptimizerState`) and the meta stream's position (the buffer
``meta_batches_seen``) are all tensors of the model's ``state_dict``, so checkpoints hold them and ``--resume``
restores them.

Choices where the paper is silent are listed in configs/gamma_net/README.md and in the option docs below.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from mmengine.dist import get_world_size, is_distributed
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIMIZERS
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptConfigType, OptMultiConfig, SampleList, add_prefix
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _NormBase

from calibseg.models.losses.samplewise_focal_loss import SampleWiseFocalLoss
from calibseg.models.losses.sece_loss import SECELoss
from calibseg.models.utils import GammaNet, MetaBatchStream, OptimizerState
from calibseg.models.wrappers import DelegatedTrainStepMixin
from calibseg.utils.validation import check_int, check_non_negative, check_positive_float, check_positive_int

__all__ = ['GammaNetEncoderDecoder', 'parse_meta_cfg']

GAMMA_NET_KEYS = ('per', 'hidden', 'gamma_max', 'init_gamma')
META_DEFAULTS: Dict[str, Any] = dict(
    dataloader=None, lr_lookahead=None, objective='ce+sece', sece_bandwidth=0.05, sece_weight=1.0,
    sece_method='auto', sece_max_pixels=None, optimizer=dict(type='Adam', lr=1e-3), grad_clip=2.0, seed=0,
    check_sync=False)
META_OBJECTIVES = ('ce+sece', 'sece')
_META_EXAMPLE = ("meta=dict(dataloader=dict(batch_size=8, dataset=dict(type='HeldOutSplit', part='held_out', "
                 "held_out=<int or fraction>, seed=0, dataset=<the training set's config>)))")


def _unknown_keys(section: str, given: Dict[str, Any], allowed) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f'model.{section} has unknown keys {unknown}; allowed: {sorted(allowed)}')


def _type_name(cfg: Dict[str, Any]) -> str:
    kind = cfg.get('type')
    return kind if isinstance(kind, str) else getattr(kind, '__name__', repr(kind))


def _check_meta_dataloader(loader: Any) -> Dict[str, Any]:
    """The meta dataloader config: a held-out part of the training set (never a test set), DefaultSampler."""
    if loader is None:
        raise ValueError('GammaNetEncoderDecoder needs a meta split: model.meta.dataloader is missing. '
                         'γ-Net learns from meta batches drawn from a held-out part of the training set, e.g. '
                         + _META_EXAMPLE + ", with train_dataloader.dataset the part='train' of the same split")
    if not isinstance(loader, dict):
        raise ValueError(f'model.meta.dataloader must be a dataloader config dict, got {type(loader).__name__}')
    dataset = loader.get('dataset')
    if not isinstance(dataset, dict) or _type_name(dataset).split('.')[-1] != 'HeldOutSplit':
        got = _type_name(dataset) if isinstance(dataset, dict) else repr(dataset)
        raise ValueError("model.meta.dataloader.dataset must be type='HeldOutSplit' with part='held_out' (meta "
                         f'batches come from a held-out part of the training set, never a test set); got {got}. '
                         'Example: ' + _META_EXAMPLE)
    if dataset.get('part') != 'held_out':
        raise ValueError("model.meta.dataloader.dataset must be the part='held_out' of a HeldOutSplit, got "
                         f"part={dataset.get('part')!r}")
    batch_size = loader.get('batch_size')
    check_positive_int('model.meta.dataloader.batch_size', batch_size)
    loader = dict(loader)
    sampler = loader.setdefault('sampler', dict(type='DefaultSampler', shuffle=True))
    if not isinstance(sampler, dict) or _type_name(sampler).split('.')[-1] != 'DefaultSampler':
        raise ValueError('model.meta.dataloader.sampler must be a DefaultSampler (meta batches are drawn epoch by '
                         'epoch, so that a resumed run continues the same order); got '
                         f'{_type_name(sampler) if isinstance(sampler, dict) else sampler!r}')
    return loader


def parse_meta_cfg(meta: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Validate ``model.meta`` and fill in the defaults (see :class:`GammaNetEncoderDecoder`).

    Raises:
        ValueError: on a missing meta split, an unknown key or a bad value, naming it.
    """
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ValueError(f'model.meta must be a dict, got {type(meta).__name__}')
    _unknown_keys('meta', meta, META_DEFAULTS)
    cfg = {**META_DEFAULTS, **meta}
    cfg['dataloader'] = _check_meta_dataloader(cfg['dataloader'])
    lr = cfg['lr_lookahead']
    if lr is not None:  # None: the optimiser's current lr of the classifier
        check_positive_float('model.meta.lr_lookahead', lr)
    if cfg['objective'] not in META_OBJECTIVES:
        raise ValueError(f"model.meta.objective must be one of {list(META_OBJECTIVES)}, got {cfg['objective']!r}")
    weight = cfg['sece_weight']
    if cfg['objective'] == 'sece' and weight == 0:
        raise ValueError("model.meta.objective='sece' with sece_weight=0 leaves γ-Net nothing to learn from")
    check_non_negative('model.meta.sece_weight', weight)
    if cfg['grad_clip'] is not None:
        check_positive_float('model.meta.grad_clip', cfg['grad_clip'])
    optimizer = cfg['optimizer']
    if not isinstance(optimizer, dict) or 'type' not in optimizer or 'params' in optimizer:
        raise ValueError("model.meta.optimizer must be an optimizer config with a 'type' and without 'params' "
                         f"(γ-Net's parameters are added), got {optimizer!r}")
    check_int('model.meta.seed', cfg['seed'])
    if not isinstance(cfg['check_sync'], bool):
        raise ValueError(f"model.meta.check_sync must be a bool, got {cfg['check_sync']!r}")
    return cfg


def _multi_process() -> bool:
    return is_distributed() and get_world_size() > 1


def _head_losses(head: BaseDecodeHead) -> List[nn.Module]:
    losses = head.loss_decode
    return list(losses) if isinstance(losses, nn.ModuleList) else [losses]


@MODELS.register_module()
class GammaNetEncoderDecoder(DelegatedTrainStepMixin, EncoderDecoder):
    """mmseg's ``EncoderDecoder`` trained with γ-Net meta-regularisation (see the module docstring).

    Args:
        backbone, decode_head, neck, auxiliary_head, train_cfg, test_cfg, data_preprocessor, pretrained, init_cfg:
            as in ``EncoderDecoder``. ``decode_head`` must be a single mmseg ``BaseDecodeHead`` whose classifier
            is its ``conv_seg`` (every head of mmseg's encoder-decoders) and whose ``loss_decode`` holds a
            ``SampleWiseFocalLoss``; auxiliary heads must not use ``SampleWiseFocalLoss`` (they get no γ).
        gamma_net: :class:`GammaNet` options: ``per`` (``'pixel'`` or ``'image'``, default ``'pixel'``),
            ``hidden`` (64), ``gamma_max`` (5.0), ``init_gamma`` (3.0). Its input width is ``conv_seg``'s.
        meta: the meta-learning options:

            * ``dataloader`` (required): the meta split, a dataloader config over
              ``dict(type='HeldOutSplit', part='held_out', ...)`` of the training set (sampler: ``DefaultSampler``,
              the default);
            * ``lr_lookahead``: step size of the look-ahead; ``None`` (default) takes the current lr of the
              network optimiser's parameter group holding ``conv_seg.weight`` (one plain SGD step);
            * ``objective``: ``'ce+sece'`` (default, ``CE + sece_weight * SECE``: the look-ahead must stay
              accurate and become calibrated) or ``'sece'`` (``sece_weight * SECE`` alone, the objective the
              paper's abstract names); CE is logged either way;
            * ``sece_bandwidth`` (0.05), ``sece_weight`` (1.0), ``sece_method`` (``'auto'``), ``sece_max_pixels``
              (``None``: every non-ignored meta pixel): SECE of the meta objective;
            * ``optimizer`` (``dict(type='Adam', lr=1e-3)``) and ``grad_clip`` (2.0, total L2 norm; ``None``
              disables it): γ-Net's own update;
            * ``seed`` (0): seed of the meta dataloader (sampler order, workers);
            * ``check_sync`` (``False``): debug option, logs ``gamma_net_rank_diff`` and ``delegated_steps``
              every step (one broadcast and one all-reduce of γ-Net's parameters under DDP).

    Raises:
        ValueError: at build time, on a missing meta split, unknown keys, bad values, or a decode head without the
            features γ-Net needs.
    """

    def __init__(self, backbone: ConfigType, decode_head: ConfigType, gamma_net: Optional[Dict[str, Any]] = None,
                 meta: Optional[Dict[str, Any]] = None, neck: OptConfigType = None,
                 auxiliary_head: OptConfigType = None, train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None, data_preprocessor: OptConfigType = None,
                 pretrained: Optional[str] = None, init_cfg: OptMultiConfig = None) -> None:
        # validate the cheap options before building the network
        meta_cfg = parse_meta_cfg(meta)
        gamma_cfg = dict(gamma_net or {})
        _unknown_keys('gamma_net', gamma_cfg, GAMMA_NET_KEYS)
        if isinstance(decode_head, (list, tuple)):
            raise ValueError('GammaNetEncoderDecoder takes one decode head (a cascade of heads has no single '
                             'classifier for γ-Net\'s look-ahead)')
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck, auxiliary_head=auxiliary_head,
                         train_cfg=train_cfg, test_cfg=test_cfg, data_preprocessor=data_preprocessor,
                         pretrained=pretrained, init_cfg=init_cfg)
        self._focal_losses = self._check_heads()
        self.gamma_net = GammaNet(self.decode_head.conv_seg.in_channels, **gamma_cfg)
        self.meta_sece = SECELoss(bandwidth=meta_cfg['sece_bandwidth'], method=meta_cfg['sece_method'],
                                  max_pixels=meta_cfg['sece_max_pixels'], seed=meta_cfg['seed'],
                                  ignore_index=self.decode_head.ignore_index, loss_name='loss_meta_sece')
        self.meta_optimizer_state = OptimizerState(
            OPTIMIZERS.build(dict(meta_cfg['optimizer'], params=self.gamma_net.parameters())))
        self.meta_batches = MetaBatchStream(meta_cfg['dataloader'], seed=meta_cfg['seed'])
        # the meta stream's position, a buffer so that checkpoints hold it and a resumed run continues it
        self.register_buffer('meta_batches_seen', torch.zeros((), dtype=torch.long))
        self.lr_lookahead: Optional[float] = meta_cfg['lr_lookahead']
        self.sece_weight = float(meta_cfg['sece_weight'])
        self.meta_objective_name: str = meta_cfg['objective']
        self.grad_clip: Optional[float] = meta_cfg['grad_clip']
        self.check_sync: bool = meta_cfg['check_sync']
        self._gamma_net_synced = False
        self._in_train_step = False

    @property
    def meta_optimizer(self) -> torch.optim.Optimizer:
        """γ-Net's optimiser (its state is checkpointed as ``meta_optimizer_state.*``)."""
        return self.meta_optimizer_state.optimizer

    # ------------------------------------------------------------------------------------------- build checks
    def _check_heads(self) -> List[SampleWiseFocalLoss]:
        head = self.decode_head
        name = type(head).__name__
        if not isinstance(head, BaseDecodeHead):
            raise ValueError(f'GammaNetEncoderDecoder needs an mmseg BaseDecodeHead (γ-Net reads the features of its '
                             f'classifier conv_seg), got {name}')
        conv = getattr(head, 'conv_seg', None)
        if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.groups != 1:
            raise ValueError(f'decode head {name} has no 1x1 classifier conv_seg, which γ-Net reads its features from '
                             f'and its look-ahead updates; got conv_seg={conv!r}')
        for method in ('loss', 'cls_seg'):
            if getattr(type(head), method) is not getattr(BaseDecodeHead, method):
                raise ValueError(f'decode head {name} overrides BaseDecodeHead.{method}, so the features γ-Net needs '
                                 "(conv_seg's input) and the head's loss cannot be recomputed for the look-ahead")
        focal = [loss for loss in _head_losses(head) if isinstance(loss, SampleWiseFocalLoss)]
        if not focal:
            kinds = [type(loss).__name__ for loss in _head_losses(head)]
            raise ValueError("GammaNetEncoderDecoder needs decode_head.loss_decode=dict(type='SampleWiseFocalLoss') "
                             f'(the focal loss whose γ γ-Net sets); got {kinds}')
        if self.with_auxiliary_head:
            aux_heads = self.auxiliary_head if isinstance(self.auxiliary_head, nn.ModuleList) \
                else [self.auxiliary_head]
            for aux in aux_heads:
                if any(isinstance(loss, SampleWiseFocalLoss) for loss in _head_losses(aux)):
                    raise ValueError('auxiliary heads get no γ from γ-Net: use CrossEntropyLoss or '
                                     'SoftmaxFocalLoss there, not SampleWiseFocalLoss')
        return focal

    def ddp_ignored_parameter_names(self) -> List[str]:
        """γ-Net's parameters: updated by the meta step, whose gradients are all-reduced by the module."""
        return [f'gamma_net.{name}' for name, _ in self.gamma_net.named_parameters()]

    # --------------------------------------------------------------------------------------- features and γ
    @contextmanager
    def _classifier_io(self) -> Iterator[Dict[str, Tensor]]:
        """Record the input (``features``) and output (``logits``) of ``decode_head.conv_seg`` inside."""
        record: Dict[str, Tensor] = {}

        def hook(module: nn.Module, args: Tuple[Tensor, ...], output: Tensor) -> None:
            record['features'] = args[0]
            record['logits'] = output

        handle = self.decode_head.conv_seg.register_forward_hook(hook)
        try:
            yield record
        finally:
            handle.remove()

    def _head_forward(self, feats: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """Decode head forward: ``(seg_logits, features conv_seg read)``; checks the head returns conv_seg's output."""
        with self._classifier_io() as record:
            seg_logits = self.decode_head.forward(feats)
        if 'features' not in record or seg_logits is not record['logits']:
            raise RuntimeError(f'{type(self.decode_head).__name__}.forward does not return the output of its '
                               'conv_seg unchanged, which γ-Net\'s look-ahead assumes')
        return seg_logits, record['features']

    def _labels(self, data_samples: SampleList) -> Tensor:
        """``(N, H, W)`` ground truth of a batch."""
        return self.decode_head._stack_batch_gt(data_samples).squeeze(1)

    def _gamma_map(self, features: Tensor, label_shape: torch.Size) -> Tensor:
        """γ-Net's γ at the label resolution: ``(N, H, W)`` per pixel (bilinear, as the head resizes its logits) or
        ``(N, 1, 1)`` per image."""
        gamma = self.gamma_net(features)
        if self.gamma_net.per == 'image':
            return gamma.reshape(-1, 1, 1)
        return resize(gamma, size=tuple(label_shape[-2:]), mode='bilinear',
                      align_corners=self.align_corners).squeeze(1)

    def _decode_loss(self, seg_logits: Tensor, data_samples: SampleList, gamma: Tensor) -> Dict[str, Tensor]:
        """The decode head's ``loss_by_feat`` with ``gamma`` in its sample-wise focal loss(es)."""
        with ExitStack() as stack:
            for loss in self._focal_losses:
                stack.enter_context(loss.gamma_context(gamma))
            return self.decode_head.loss_by_feat(seg_logits, data_samples)

    def _decode_head_forward_train(self, inputs: List[Tensor], data_samples: SampleList) -> Dict[str, Tensor]:
        """The decode head's loss with γ from γ-Net (detached) on this forward's own features."""
        if self.training and _multi_process() and not self._in_train_step:
            raise RuntimeError('GammaNetEncoderDecoder trains through its own train_step; under DDP set '
                               "model_wrapper_cfg=dict(type='TrainStepDelegatingDDP') (mmengine's "
                               'MMDistributedDataParallel would skip the meta step)')
        seg_logits, features = self._head_forward(inputs)
        labels = self._labels(data_samples)
        with torch.no_grad():
            gamma = self._gamma_map(features.detach(), labels.shape)
        losses = add_prefix(self._decode_loss(seg_logits, data_samples, gamma), 'decode')
        valid = labels != self.decode_head.ignore_index
        used = gamma.expand(labels.shape)[valid] if bool(valid.any()) else gamma.reshape(-1)
        losses['gamma_mean'] = used.mean()
        losses['gamma_std'] = used.std(unbiased=False)
        return losses

    # ------------------------------------------------------------------------------------------ the meta step
    @contextmanager
    def _frozen_norm_statistics(self) -> Iterator[None]:
        """Normalisation layers keep their running statistics (the look-ahead forwards must not move them)."""
        saved = []
        for module in self.modules():
            if isinstance(module, _NormBase) and module.track_running_stats:
                saved.append((module, [buf.detach().clone() if buf is not None else None for buf in
                                       (module.running_mean, module.running_var, module.num_batches_tracked)]))
        try:
            yield
        finally:
            with torch.no_grad():
                for module, buffers in saved:
                    current = (module.running_mean, module.running_var, module.num_batches_tracked)
                    for buf, old in zip(current, buffers):
                        if buf is not None:
                            buf.copy_(old)

    def classifier_features(self, inputs: Tensor) -> Tensor:
        """Features that ``decode_head.conv_seg`` reads for ``inputs`` (train mode, no gradient, running
        statistics untouched)."""
        with torch.no_grad(), self._frozen_norm_statistics():
            _, features = self._head_forward(self.extract_feat(inputs))
        return features

    def meta_objective(self, train_data: Dict[str, Any], meta_data: Dict[str, Any],
                       lr: float) -> Tuple[Tensor, Dict[str, Tensor]]:
        r"""``L_meta(θ) = CE + sece_weight·SECE`` (or ``sece_weight·SECE`` alone with ``objective='sece'``) of the
        look-ahead classifier ``w' = w - lr·∇_w L_train(w, γ_θ)``
        on the meta batch, differentiable in γ-Net's parameters θ.

        Args:
            train_data, meta_data: preprocessed batches (``data_preprocessor(batch, True)``): ``inputs`` and
                ``data_samples`` with ground truth.
            lr: the look-ahead step size.

        Returns:
            ``(L_meta, logs)`` with detached ``meta_ce``, ``meta_sece``, ``meta_objective``.
        """
        head = self.decode_head
        train_features = self.classifier_features(train_data['inputs'])
        meta_features = self.classifier_features(meta_data['inputs'])
        weights = {name: p.detach().requires_grad_() for name, p in head.conv_seg.named_parameters()}
        train_labels = self._labels(train_data['data_samples'])
        gamma = self._gamma_map(train_features, train_labels.shape)
        train_logits = functional_call(head.conv_seg, weights, (train_features,))
        train_losses = self._decode_loss(train_logits, train_data['data_samples'], gamma)
        inner = sum(value for key, value in train_losses.items() if 'loss' in key)
        grads = torch.autograd.grad(inner, tuple(weights.values()), create_graph=True)
        fast = {name: w - lr * g for (name, w), g in zip(weights.items(), grads)}
        meta_logits = functional_call(head.conv_seg, fast, (meta_features,))
        meta_labels = self._labels(meta_data['data_samples'])
        meta_logits = resize(meta_logits, size=meta_labels.shape[-2:], mode='bilinear',
                             align_corners=head.align_corners)
        meta_labels = meta_labels.long()
        num_valid = int((meta_labels != head.ignore_index).sum())
        ce = F.cross_entropy(meta_logits, meta_labels, ignore_index=head.ignore_index,
                             reduction='sum') / max(num_valid, 1)
        sece = self.meta_sece(meta_logits, meta_labels)
        objective = self.sece_weight * sece if self.meta_objective_name == 'sece' else ce + self.sece_weight * sece
        logs = dict(meta_ce=ce.detach(), meta_sece=sece.detach(), meta_objective=objective.detach())
        return objective, logs

    def _lookahead_lr(self, optim_wrapper: OptimWrapper) -> float:
        if self.lr_lookahead is not None:
            return self.lr_lookahead
        weight = self.decode_head.conv_seg.weight
        optimizer = getattr(optim_wrapper, 'optimizer', None)
        for group in getattr(optimizer, 'param_groups', []):
            if any(p is weight for p in group['params']):
                return float(group['lr'])
        raise RuntimeError('decode_head.conv_seg.weight is in no parameter group of the network optimiser, so '
                           'the look-ahead step size cannot follow it: set model.meta.lr_lookahead')

    def _sync_gamma_net(self) -> None:
        """Start every rank from rank 0's γ-Net (DDP broadcasts only the parameters it manages)."""
        if _multi_process():
            for param in self.gamma_net.parameters():
                dist.broadcast(param.data, src=0)
        self._gamma_net_synced = True

    def _rank_average(self, grads: List[Tensor]) -> List[Tensor]:
        if not _multi_process():
            return grads
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= get_world_size()
        return [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads)]

    def _rank_difference(self) -> Tensor:
        flat = torch.cat([p.detach().reshape(-1) for p in self.gamma_net.parameters()]).double()
        if not _multi_process():
            return flat.new_zeros(())
        reference = flat.clone()
        dist.broadcast(reference, src=0)
        diff = (flat - reference).abs().max()
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
        return diff

    def meta_step(self, train_data: Dict[str, Any], meta_data: Dict[str, Any], lr: float) -> Dict[str, Tensor]:
        """Steps 2-3 of the module docstring: one update of γ-Net; returns the meta log values."""
        objective, logs = self.meta_objective(train_data, meta_data, lr)
        params = list(self.gamma_net.parameters())
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        grads = self._rank_average(grads)
        for param, grad in zip(params, grads):
            param.grad = grad
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.meta_optimizer.step()
        for param in params:  # the network optimiser must never see (and step) γ-Net's parameters
            param.grad = None
        return logs

    def train_step(self, data: Any, optim_wrapper: OptimWrapper,
                   ddp_wrapper: Optional[nn.Module] = None) -> Dict[str, Tensor]:
        """One γ-Net step: meta update of γ-Net, then the network's update with the new γ (module docstring)."""
        if not self._gamma_net_synced:
            self._sync_gamma_net()
        seen = int(self.meta_batches_seen)
        if self.meta_batches.consumed != seen:  # a checkpoint was loaded: continue its meta stream
            self.meta_batches.restore(seen)
        meta_batch = self.meta_batches.next()
        self.meta_batches_seen.fill_(self.meta_batches.consumed)
        with self.optim_context(optim_wrapper, ddp_wrapper):
            data = self.data_preprocessor(data, True)
        meta_data = self.data_preprocessor(meta_batch, True)
        logs = self.meta_step(data, meta_data, self._lookahead_lr(optim_wrapper))
        self._in_train_step = True
        try:
            with self.optim_context(optim_wrapper, ddp_wrapper):
                losses = self.loss_forward(data, ddp_wrapper)
        finally:
            self._in_train_step = False
        parsed, log_vars = self.parse_losses(losses)
        optim_wrapper.update_params(parsed)
        log_vars.update(logs)
        if self.check_sync:
            log_vars['gamma_net_rank_diff'] = self._rank_difference()
            log_vars['delegated_steps'] = torch.tensor(float(self.delegated_train_steps))
        return log_vars
