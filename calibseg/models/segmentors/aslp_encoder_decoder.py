r"""An encoder-decoder that carries ASLP's per-image perturbation probabilities (Liu et al., ICCV 2023).

ASLP gives every training image its own SC-BCE probability :math:`\alpha_i`. A loss never learns which image
a pixel came from, so the state lives here, in the segmentor:

* **the table**: one :math:`\alpha` per training image in the persistent buffer ``aslp_alpha`` (float64,
  :math:`\alpha_0 = 0`), keyed by the image's ``img_path`` relative to the common folder of the training
  images (so a moved ``data_root`` still matches), in sorted key order. The table, a 64-bit hash of every key
  (``aslp_key_hash``), the last validation accuracy ``aslp_acc_val`` and the step counter ``aslp_steps`` are
  buffers: all are in every checkpoint and come back on resume exactly (only tensors: mmengine broadcasts every
  ``state_dict`` entry when it initialises a distributed run). :class:`~calibseg.engine.hooks.ASLPHook` keys
  the table by the training set before the first epoch and checks the hashes of a resumed table;
* **the loss**: :meth:`loss` looks up the :math:`\alpha_i` of the batch's images by ``img_path`` (never by
  batch position) and calls every adaptive ``SCBCELoss`` (built with ``alpha=None``) of the decode head with
  ``alpha=<(N,) tensor>``; other losses and the auxiliary heads run as in mmseg;
* **the update**: :meth:`train_step` updates the batch's :math:`\alpha_i` after the optimiser step with
  :func:`~calibseg.functional.losses.aslp.aslp_alpha_update`, from the ``update_from_epoch``-th epoch on
  (1-based, as mmengine logs epochs; the reference code's ``epoch > 5`` with epochs counted from 1 is
  ``update_from_epoch=6``), using :math:`\mathrm{BCE}_i` and :math:`\mathrm{CAL}_i` of the *original*
  target from the same forward pass (detached) and the held-out accuracy the hook measured at the end of the
  previous epoch;
* **DDP**: every rank sees different images. After each step the ranks all-gather their ``(index, new
  alpha)`` pairs and every rank writes all of them in rank order, so all ranks hold the identical table. Under
  DDP mmengine's ``MMDistributedDataParallel.train_step`` would never call this ``train_step``: configs set
  ``model_wrapper_cfg=dict(type='TrainStepDelegatingDDP')`` (the hook refuses other wrappers). The ASLP
  buffers are kept out of DDP's buffer broadcast;
* **soft targets** (``soft_targets=True``): SC-BCE and the statistics :math:`\mathrm{BCE}_i` take the grey-level
  masks / 255 (``data_sample.gt_soft_mask``, resized bilinearly, not thresholded) instead of the binarised labels,
  as the reference code trains; the auxiliary heads' losses get them too (see :mod:`.soft_targets`). The
  held-out accuracy and evaluation use the binarised masks;
* **reproducible draws**: SC-BCE draws with its own generator. When the loss has a ``seed``, its generator is
  re-seeded before every step from ``(seed, rank, step)``, so a resumed run draws exactly what the
  uninterrupted run drew (a generator state is not part of a checkpoint).

Config::

    model = dict(type='ASLPEncoderDecoder', update_from_epoch=6, eta=0.002, lam=2000.0,
                 decode_head=dict(num_classes=2, out_channels=1, threshold=0.5,
                                  loss_decode=dict(type='SCBCELoss', beta=2.0, alpha=None, seed=0)), ...)
    model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
    custom_hooks = [dict(type='ASLPHook', dataloader='aslp_val_dataloader')]
"""
from __future__ import annotations

import hashlib
import os.path as osp
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.dist import all_gather, get_rank, get_world_size
from mmengine.optim import OptimWrapper
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from mmseg.utils import add_prefix
from torch import Tensor, nn

from ...functional.losses.aslp import aslp_alpha_update, aslp_image_statistics, validate_aslp_args
from ..losses.scbce import SCBCELoss
from ..wrappers import DelegatedTrainStepMixin
from .soft_targets import SoftTargetMixin, head_loss_modules, head_losses

__all__ = ['ASLPEncoderDecoder', 'aslp_table_keys', 'key_hash']

ASLP_BUFFERS = ('aslp_alpha', 'aslp_key_hash', 'aslp_acc_val', 'aslp_steps')


def aslp_table_keys(img_paths: Sequence[str]) -> Tuple[str, List[str]]:
    """The table's root folder and sorted keys for the training images ``img_paths``.

    A key is an image's path relative to the deepest folder that contains every training image, with ``/``
    separators. Raises ``ValueError`` on an empty list or duplicate images.
    """
    paths = [osp.normpath(p) for p in img_paths]
    if not paths:
        raise ValueError('ASLP needs at least one training image')
    root = osp.commonpath([osp.dirname(osp.abspath(p)) for p in paths])
    keys = [osp.relpath(osp.abspath(p), root).replace(osp.sep, '/') for p in paths]
    if len(set(keys)) != len(keys):
        counts: Dict[str, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        raise ValueError(f'the training set lists images more than once (ASLP keeps one alpha per image): '
                         f'{sorted(k for k, n in counts.items() if n > 1)[:10]}')
    return root, sorted(keys)


def key_hash(key: str) -> int:
    """A stable signed 64-bit hash of a table key (BLAKE2b; Python's ``hash`` of a str changes per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode('utf-8'), digest_size=8).digest(), 'little', signed=True)


def _step_seed(seed: int, rank: int, step: int) -> int:
    """A well-mixed 63-bit generator seed for ``(seed, rank, step)``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, int(rank), int(step)])
    return int(state.generate_state(1, np.uint64)[0]) >> 1


@MODELS.register_module()
class ASLPEncoderDecoder(DelegatedTrainStepMixin, SoftTargetMixin, EncoderDecoder):
    r"""mmseg's ``EncoderDecoder`` with ASLP's per-image :math:`\alpha` table (module docstring).

    Args:
        update_from_epoch: first epoch (1-based) whose steps update :math:`\alpha`; the epochs before are
            the warm-up, trained with :math:`\alpha = 0` (plain BCE). Reference: 6.
        eta: step size :math:`\eta` (reference 0.002).
        lam: weight :math:`\lambda` of the accuracy constraint (reference 2000).
        alpha_margin: the table is clipped to ``[0, 1/(2 beta) - alpha_margin]`` (reference 0.01).
        prob_clamp: :math:`p` is clamped to ``[prob_clamp, 1 - prob_clamp]`` in BCE_i and CAL_i (reference
            1e-7; 0 disables it).
        soft_targets: train on the soft masks (``data_sample.gt_soft_mask``) instead of the binarised labels
            (module docstring); every loss of the decode and auxiliary heads must accept soft targets.
        backbone, decode_head, neck, auxiliary_head, train_cfg, test_cfg, data_preprocessor, pretrained,
        init_cfg: as in mmseg's ``EncoderDecoder``. The decode head must have ``out_channels=1`` and at
            least one ``SCBCELoss`` with ``alpha=None`` (its ``beta`` is the update's :math:`\beta`; several
            adaptive SC-BCE losses must share one ``beta``).

    Raises:
        ValueError: at construction, on bad hyper-parameters, a multi-channel decode head, no adaptive
            ``SCBCELoss`` in the decode head, or (``soft_targets=True``) a head or loss that cannot take soft
            targets.
    """

    def __init__(self, backbone: dict, decode_head: dict, *, update_from_epoch: int = 6, eta: float = 0.002,
                 lam: float = 2000.0, alpha_margin: float = 0.01, prob_clamp: float = 1e-7,
                 soft_targets: bool = False, neck: Optional[dict] = None, auxiliary_head: Optional[dict] = None,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None, pretrained: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(backbone=backbone, decode_head=decode_head, neck=neck, auxiliary_head=auxiliary_head,
                         train_cfg=train_cfg, test_cfg=test_cfg, data_preprocessor=data_preprocessor,
                         pretrained=pretrained, init_cfg=init_cfg)
        if self.decode_head.out_channels != 1:
            raise ValueError(f'ASLPEncoderDecoder needs a one-channel (sigmoid) decode head: out_channels=1, '
                             f'num_classes=2; got out_channels={self.decode_head.out_channels}')
        adaptive = [loss for loss in self._decode_losses() if isinstance(loss, SCBCELoss) and loss.alpha is None]
        if not adaptive:
            raise ValueError("ASLPEncoderDecoder needs an adaptive SC-BCE in the decode head: "
                             "loss_decode=dict(type='SCBCELoss', alpha=None, ...) (a fixed alpha is plain SC-BCE, "
                             'which needs no per-image table: use EncoderDecoder)')
        betas = {loss.beta for loss in adaptive}
        if len(betas) != 1:
            raise ValueError(f'the adaptive SCBCELoss modules of the decode head must share one beta, got {betas}')
        if isinstance(update_from_epoch, bool) or not isinstance(update_from_epoch, int) or update_from_epoch < 1:
            raise ValueError(f'update_from_epoch must be an int >= 1 (1-based epoch), got {update_from_epoch!r}')
        options = validate_aslp_args(beta=betas.pop(), eta=eta, lam=lam, alpha_margin=alpha_margin,
                                     prob_clamp=prob_clamp)
        self.update_from_epoch = update_from_epoch
        self.beta = options['beta']
        self.eta = options['eta']
        self.lam = options['lam']
        self.alpha_margin = options['alpha_margin']
        self.alpha_max = options['alpha_max']
        self.prob_clamp = options['prob_clamp']
        self.register_buffer('aslp_alpha', torch.zeros(0, dtype=torch.float64))
        self.register_buffer('aslp_key_hash', torch.zeros(0, dtype=torch.int64))
        self.register_buffer('aslp_acc_val', torch.tensor(float('nan'), dtype=torch.float64))
        self.register_buffer('aslp_steps', torch.tensor(0, dtype=torch.int64))
        self._aslp_keys: List[str] = []
        self._aslp_index: Dict[str, int] = {}
        self._aslp_root: Optional[str] = None
        self.aslp_updating = False
        self._aslp_batch: Optional[Tuple[Tensor, Tensor, Tensor, Tensor]] = None
        self._init_soft_targets(soft_targets)

    # ------------------------------------------------------------------------------------------- table
    @property
    def aslp_keys(self) -> List[str]:
        """Keys of the table (image paths relative to the training images' common folder), in table order."""
        return list(self._aslp_keys)

    def aslp_init_table(self, img_paths: Sequence[str], *, reset: bool = False) -> str:
        """Key the table by the training images ``img_paths`` (paths as the dataset lists them).

        A table that already holds exactly these keys (restored from a checkpoint) is kept unless ``reset``;
        an empty table, or any table with ``reset=True``, becomes all zeros.

        Returns:
            ``'restored'`` or ``'initialised'``.

        Raises:
            ValueError: when a restored table was keyed by other images (and ``reset`` is False).
        """
        root, keys = aslp_table_keys(img_paths)
        hashes = torch.tensor([key_hash(k) for k in keys], dtype=torch.int64, device=self.aslp_key_hash.device)
        self._aslp_root = root
        if self.aslp_key_hash.numel() and not reset:
            if not torch.equal(hashes, self.aslp_key_hash):
                known = set(self.aslp_key_hash.tolist())
                missing = [k for k, h in zip(keys, hashes.tolist()) if h not in known]
                extra = len(known - set(hashes.tolist()))
                raise ValueError(
                    f'the ASLP table loaded from the checkpoint was keyed by another training set: '
                    f'{len(missing)} of the {len(keys)} training images have no alpha in it (e.g. {missing[:5]}) '
                    f'and {extra} of its {self.aslp_key_hash.numel()} entries are not training images. Use the '
                    'same training set (and HeldOutSplit seed), or ASLPHook(reset_table=True) to start a new table.')
            self._set_keys(keys)
            return 'restored'
        self._set_keys(keys)
        self.aslp_key_hash = hashes
        self.aslp_alpha = torch.zeros(len(keys), dtype=torch.float64, device=self.aslp_alpha.device)
        self.aslp_acc_val.fill_(float('nan'))
        return 'initialised'

    def _set_keys(self, keys: List[str]) -> None:
        self._aslp_keys = list(keys)
        self._aslp_index = {key: i for i, key in enumerate(keys)}

    def aslp_indices(self, img_paths: Sequence[str]) -> Tensor:
        """Table indices of images given by ``img_path`` (``(N,)`` long tensor on the table's device)."""
        if not self._aslp_keys or self._aslp_root is None:
            raise RuntimeError('the ASLP table is empty: ASLPEncoderDecoder is trained with ASLPHook in '
                               "custom_hooks (custom_hooks=[dict(type='ASLPHook', ...)]), which keys the table "
                               'by the training images before the first epoch')
        out = []
        for path in img_paths:
            key = osp.relpath(osp.abspath(osp.normpath(path)), self._aslp_root).replace(osp.sep, '/')
            if key not in self._aslp_index:
                raise KeyError(f'image {path} is not in the ASLP table ({len(self._aslp_keys)} training images '
                               f'under {self._aslp_root}): ASLP trains on the dataset the table was built from')
            out.append(self._aslp_index[key])
        return torch.tensor(out, dtype=torch.long, device=self.aslp_alpha.device)

    def aslp_set_epoch(self, epoch: int) -> bool:
        """Enable the updates for 0-based ``epoch`` when ``epoch + 1 >= update_from_epoch``; return the flag."""
        self.aslp_updating = epoch + 1 >= self.update_from_epoch
        return self.aslp_updating

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # the table's length is the training set's: take the checkpoint's before the copy
        for name, dtype in (('aslp_alpha', torch.float64), ('aslp_key_hash', torch.int64)):
            value = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(value, Tensor) and value.shape != current.shape:
                setattr(self, name, torch.zeros(value.shape, dtype=dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if self.aslp_key_hash.numel() != self.aslp_alpha.numel():
            error_msgs.append(f'ASLP table of {self.aslp_alpha.numel()} values but {self.aslp_key_hash.numel()} '
                              'key hashes')
        if self._aslp_keys and [key_hash(k) for k in self._aslp_keys] != self.aslp_key_hash.tolist():
            self._aslp_keys, self._aslp_index = [], {}  # another table: the hook re-keys it by the training set

    def ddp_ignored_parameter_names(self) -> List[str]:
        """The ASLP buffers: synchronised by :meth:`train_step`, never broadcast by DDP."""
        return list(ASLP_BUFFERS)

    # -------------------------------------------------------------------------------------------- loss
    def _decode_losses(self) -> List[nn.Module]:
        return head_loss_modules(self.decode_head)

    def loss(self, inputs: Tensor, data_samples: list) -> Dict[str, Tensor]:
        """mmseg's ``EncoderDecoder.loss`` with the batch's per-image :math:`\\alpha` given to adaptive SC-BCE."""
        x = self.extract_feat(inputs)
        losses = add_prefix(self._aslp_decode_loss(x, data_samples), 'decode')
        if self.with_auxiliary_head:
            losses.update(self._auxiliary_head_forward_train(x, data_samples))
        return losses

    def _aslp_decode_loss(self, x: List[Tensor], data_samples: list) -> Dict[str, Tensor]:
        """The decode head's losses (:func:`.soft_targets.head_losses`), with ``alpha`` passed to adaptive SC-BCE
        and the batch's statistics kept for the update."""
        head = self.decode_head
        index = self.aslp_indices([sample.metainfo['img_path'] for sample in data_samples])
        alpha = self.aslp_alpha[index]
        step = int(self.aslp_steps)
        adaptive = [m for m in self._decode_losses() if isinstance(m, SCBCELoss) and m.alpha is None]
        for loss_module in adaptive:
            if loss_module.seed is not None:
                loss_module.generator.manual_seed(_step_seed(loss_module.seed, get_rank(), step))
        out = head_losses(head, head.forward(x), data_samples, soft_targets=self.soft_targets,
                          loss_kwargs=lambda m: dict(alpha=alpha) if any(m is a for a in adaptive) else {})
        stats = aslp_image_statistics(out.seg_logits, out.seg_label, ignore_index=head.ignore_index,
                                      prob_clamp=self.prob_clamp, soft_target=out.soft_target)
        self._aslp_batch = (index, stats.bce, stats.cal, stats.num_pixels > 0)
        return out.losses

    # ---------------------------------------------------------------------------------------- training
    def train_step(self, data: Any, optim_wrapper: OptimWrapper,
                   ddp_wrapper: Optional[nn.Module] = None) -> Dict[str, Tensor]:
        """Forward-backward-step (through ``ddp_wrapper`` under DDP), then the ASLP update of the batch."""
        with self.optim_context(optim_wrapper, ddp_wrapper):
            data = self.data_preprocessor(data, True)
            losses = self.loss_forward(data, ddp_wrapper)
        parsed, log_vars = self.parse_losses(losses)
        optim_wrapper.update_params(parsed)
        batch, self._aslp_batch = self._aslp_batch, None
        if batch is None:
            raise RuntimeError('ASLPEncoderDecoder.train_step: the forward pass did not go through '
                               'ASLPEncoderDecoder.loss')
        if self.aslp_updating:
            self._aslp_update(*batch)
            log_vars['aslp_alpha_batch'] = self.aslp_alpha[batch[0]].mean().to(torch.float32)
        self.aslp_steps += 1
        return log_vars

    @torch.no_grad()
    def _aslp_update(self, index: Tensor, bce: Tensor, cal: Tensor, valid: Tensor) -> None:
        acc_val = float(self.aslp_acc_val)
        if not acc_val == acc_val:  # NaN
            raise RuntimeError('ASLP update without a validation accuracy: ASLPHook measures it on the held-out '
                               'images at the end of every epoch (and before the first update epoch)')
        new = aslp_alpha_update(self.aslp_alpha[index], bce, cal, acc_val=acc_val, beta=self.beta, eta=self.eta,
                                lam=self.lam, alpha_max=self.alpha_max)
        index, new = index[valid], new[valid]
        if get_world_size() > 1:
            index, new = _gather_pairs(index, new)
        # every rank writes every pair in the same order (rank, then batch position): identical tables
        for i, value in zip(index.tolist(), new.tolist()):
            self.aslp_alpha[i] = value


def _gather_pairs(index: Tensor, values: Tensor) -> Tuple[Tensor, Tensor]:
    """All ranks' ``(index, value)`` pairs in rank order (batches of different sizes are padded)."""
    count = torch.tensor([index.numel()], dtype=torch.long, device=index.device)
    counts = [int(c) for c in all_gather(count)]
    size = max(counts)
    pad_index = torch.full((size,), -1, dtype=torch.long, device=index.device)
    pad_index[:index.numel()] = index
    pad_values = torch.zeros(size, dtype=torch.float64, device=index.device)
    pad_values[:values.numel()] = values
    indices = all_gather(pad_index)
    gathered = all_gather(pad_values)
    return (torch.cat([i[:n] for i, n in zip(indices, counts)]),
            torch.cat([v[:n] for v, n in zip(gathered, counts)]))
