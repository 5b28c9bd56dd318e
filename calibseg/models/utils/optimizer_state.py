"""An optimiser owned by a model, with its per-parameter state in the model's ``state_dict``.

γ-Net's optimiser is not the Runner's: it is built and stepped by the segmentor. To checkpoint and resume it
with the model, :class:`OptimizerState` (a parameter-less child module) writes the tensor entries of the
optimiser's per-parameter state into the owner's ``state_dict`` as ``<prefix>.<param index>.<name>`` (e.g.
``meta_optimizer_state.0.exp_avg``) and loads them back. Only tensors go there, because mmengine treats every
``state_dict`` entry as a tensor (it broadcasts each one after ``init_weights`` in distributed runs and copies them
to the CPU when saving). The hyper-parameters (``param_groups``: lr, betas, ...) are not saved: they come from the
config. Non-tensor per-parameter entries (none for Adam, AdamW or SGD with momentum) are not saved either.
"""
from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import Tensor, nn

__all__ = ['OptimizerState']


class OptimizerState(nn.Module):
    """Holds ``optimizer`` and puts its per-parameter tensor state into the ``state_dict`` of its owner.

    Args:
        optimizer: a ``torch.optim.Optimizer`` over parameters of the owning model.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        super().__init__()
        self.optimizer = optimizer

    def _save_to_state_dict(self, destination: Dict[str, Any], prefix: str, keep_vars: bool) -> None:
        for index, entry in self.optimizer.state_dict()['state'].items():
            for name, value in entry.items():
                if isinstance(value, Tensor):
                    destination[f'{prefix}{index}.{name}'] = value if keep_vars else value.detach()

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, local_metadata: Dict[str, Any],
                              strict: bool, missing_keys: List[str], unexpected_keys: List[str],
                              error_msgs: List[str]) -> None:
        num_params = sum(len(group['params']) for group in self.optimizer.param_groups)
        state: Dict[int, Dict[str, Tensor]] = {}
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                continue
            index, _, name = key[len(prefix):].partition('.')
            if not index.isdigit() or int(index) >= num_params or not name or '.' in name \
                    or not isinstance(value, Tensor):
                unexpected_keys.append(key)
                continue
            state.setdefault(int(index), {})[name] = value.detach().clone()
        # the saved state replaces the current one; no entry means a checkpoint taken before the first step
        current = self.optimizer.state_dict()
        self.optimizer.load_state_dict(dict(state=state, param_groups=current['param_groups']))

    def extra_repr(self) -> str:
        return type(self.optimizer).__name__
