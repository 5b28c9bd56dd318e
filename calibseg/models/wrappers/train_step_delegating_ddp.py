"""A DDP wrapper that hands ``train_step`` to the wrapped segmentor.

mmengine's ``MMDistributedDataParallel.train_step`` runs its own preprocessing, forward, loss parsing and update
and never calls the wrapped model's ``train_step``, so per-step logic written there (a meta update, a second
forward on mixed images, per-image state updates) silently disappears under DDP. ``TrainStepDelegatingDDP``
calls ``module.train_step(data, optim_wrapper, ddp_wrapper=self)`` instead; the module runs its gradient-carrying
forward through ``ddp_wrapper`` (so DDP still all-reduces the network's gradients) and anything DDP cannot do
(``torch.autograd.grad`` look-aheads, state updates) on itself. Parameters the module lists in
``ddp_ignored_parameter_names()`` are kept out of DDP's reducer; the module all-reduces their gradients itself.

Config (the ``launcher='pytorch'`` path of ``tools/train.py`` adds ``device_ids=None`` on CPU)::

    model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ['TrainStepDelegatingDDP', 'DelegatedTrainStepMixin']


@MODEL_WRAPPERS.register_module()
class TrainStepDelegatingDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` whose ``train_step`` is the module's own (see the module docstring).

    Args:
        module: a model implementing ``train_step(data, optim_wrapper, ddp_wrapper=None)``
            (e.g. through :class:`DelegatedTrainStepMixin`).
        detect_anomalous_params: as in ``MMDistributedDataParallel``.
        **kwargs: ``torch.nn.parallel.DistributedDataParallel`` arguments (``device_ids``, ``broadcast_buffers``,
            ``find_unused_parameters``...).
    """

    def __init__(self, module: nn.Module, detect_anomalous_params: bool = False, **kwargs: Any) -> None:
        if not isinstance(module, DelegatedTrainStepMixin):
            raise TypeError(f'TrainStepDelegatingDDP wraps models with their own distributed train_step '
                            f'(calibseg.models.wrappers.DelegatedTrainStepMixin); got {type(module).__name__}. '
                            "Use model_wrapper_cfg=dict(type='MMDistributedDataParallel') for plain segmentors.")
        ignored = list(module.ddp_ignored_parameter_names())
        if ignored:
            known = {name for name, _ in module.named_parameters()} | {name for name, _ in module.named_buffers()}
            unknown = sorted(set(ignored) - known)
            if unknown:
                raise ValueError(f'ddp_ignored_parameter_names() lists names the module does not have: {unknown}')
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
        super().__init__(module=module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    def train_step(self, data: Any, optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """Delegate to ``module.train_step(data, optim_wrapper, ddp_wrapper=self)``."""
        self.module.delegated_train_steps += 1
        return self.module.train_step(data, optim_wrapper, ddp_wrapper=self)


class DelegatedTrainStepMixin:
    """Helpers for a segmentor whose ``train_step`` does more than forward-backward-step, under DDP or not.

    A subclass implements ``train_step(data, optim_wrapper, ddp_wrapper=None)`` with :meth:`loss_forward` for
    every forward whose gradients DDP must synchronise, and :meth:`optim_context` around it.
    ``delegated_train_steps`` counts the steps :class:`TrainStepDelegatingDDP` handed over (tests use it to prove
    the path is taken).
    """

    delegated_train_steps: int = 0

    def ddp_ignored_parameter_names(self) -> List[str]:
        """Names (as in ``named_parameters``) that DDP must not reduce; the module syncs them itself."""
        return []

    def loss_forward(self, data: Dict[str, Any], ddp_wrapper: Optional[nn.Module]) -> Dict[str, torch.Tensor]:
        """``forward(**data, mode='loss')``, through the DDP wrapper when there is one."""
        model: Callable[..., Dict[str, torch.Tensor]] = ddp_wrapper if ddp_wrapper is not None else self  # type: ignore[assignment]
        if isinstance(data, dict):
            return model(**data, mode='loss')
        return model(*data, mode='loss')

    def optim_context(self, optim_wrapper: OptimWrapper, ddp_wrapper: Optional[nn.Module]):
        """``optim_wrapper.optim_context`` on the wrapper (gradient accumulation's ``no_sync``) or the module."""
        return optim_wrapper.optim_context(ddp_wrapper if ddp_wrapper is not None else self)  # type: ignore[arg-type]
