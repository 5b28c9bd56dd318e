"""An endless, resumable stream of batches from a dataloader config (γ-Net's meta batches).

The dataloader is built on first use with mmengine's ``Runner.build_dataloader`` (the same builder as the
Runner's own loaders: registered datasets, samplers, collate functions, seeded workers) and walked epoch after
epoch, calling the sampler's ``set_epoch``. The stream's position is one integer, the number of batches handed
out so far: a model saves it in its checkpoint, and :meth:`MetaBatchStream.restore` makes the next batch the one
an uninterrupted run would have drawn (it re-creates the epoch's order and skips the batches already used,
loading them, as mmengine does for the training loader on resume).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterator, Optional

from calibseg.utils.validation import check_positive_int

__all__ = ['MetaBatchStream']


class MetaBatchStream:
    """Batches of ``dataloader_cfg``, epoch after epoch, with a resumable position.

    Args:
        dataloader_cfg: an mmengine dataloader config (``dataset``, ``batch_size``, ``sampler`` ...); its sampler
            must order an epoch from its seed and epoch alone (mmengine's ``DefaultSampler`` does).
        seed: seed handed to ``Runner.build_dataloader`` (the sampler's seed unless the config sets one, and the
            workers' seeds); the same on every rank, so that ranks draw disjoint shards of one order.
    """

    def __init__(self, dataloader_cfg: Dict[str, Any], *, seed: int = 0) -> None:
        self.cfg = copy.deepcopy(dataloader_cfg)
        self.seed = seed
        self.consumed = 0
        self._loader = None
        self._iterator: Optional[Iterator[Any]] = None
        self._epoch = 0

    def __len__(self) -> int:
        """Batches per epoch (builds the dataloader)."""
        return len(self.loader)

    @property
    def loader(self):
        """The dataloader, built on first access."""
        if self._loader is None:
            from mmengine.runner import Runner  # a model module should not import the Runner at import time

            loader = Runner.build_dataloader(self.cfg, seed=self.seed)
            if len(loader) == 0:
                raise ValueError('the meta dataloader yields no batch: its dataset is smaller than its batch size '
                                 '(with drop_last) or empty')
            self._loader = loader
        return self._loader

    def restore(self, consumed: int) -> None:
        """Continue as if ``consumed`` batches had been drawn already (after loading a checkpoint)."""
        self.consumed = check_positive_int('consumed', consumed, minimum=0)
        self._iterator = None

    def _start_epoch(self, epoch: int) -> None:
        sampler = getattr(self.loader, 'sampler', None)
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
        batch_sampler = getattr(self.loader, 'batch_sampler', None)
        if batch_sampler is not None and hasattr(batch_sampler, 'set_epoch'):
            batch_sampler.set_epoch(epoch)
        self._epoch = epoch
        self._iterator = iter(self.loader)

    def next(self) -> Any:
        """The next batch (a new epoch starts when one is exhausted)."""
        if self._iterator is None:
            epoch, offset = divmod(self.consumed, len(self.loader))
            self._start_epoch(epoch)
            for _ in range(offset):
                next(self._iterator)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._start_epoch(self._epoch + 1)
            batch = next(self._iterator)
        self.consumed += 1
        return batch
