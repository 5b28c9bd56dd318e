"""Bookkeeping shared by calibseg's streaming metrics: one accumulator per rank, padding removal, merging.

mmengine's ``BaseMetric`` gathers a list of per-sample results from every rank and truncates it to the dataset
size, which removes the duplicates that ``DefaultSampler`` pads the last round with. A streaming metric keeps
one fixed-size accumulator per rank instead, so it has to remove those duplicates itself. With mmengine's val and
test loops (``DefaultSampler(shuffle=False)``, ``round_up=True``), rank ``r`` of ``W`` processes the padded index
list ``[0, ..., n-1, 0, 1, ...]`` at positions ``r, r + W, r + 2W, ...``: its ``k``-th sample is padding iff
``r + k*W >= n``, which can only be its last sample (padding is shorter than ``W``). So each rank keeps its most
recent sample's statistics aside ("pending") and decides at ``evaluate(size)`` whether to merge them.
"""
from __future__ import annotations

from typing import Callable, Generic, Optional, TypeVar

import torch
from mmengine.logging import print_log

from calibseg.utils.distributed import dist_info, sum_across_ranks

T = TypeVar('T')

__all__ = ['PaddingAwareAccumulator']


class PaddingAwareAccumulator(Generic[T]):
    """Sum per-sample statistics on one rank, dropping the sampler's padding duplicate at the end.

    Args:
        add: ``add(total, sample) -> total`` for the statistics type (``total`` may be ``None``).
    """

    def __init__(self, add: Callable[[Optional[T], T], T]) -> None:
        self._add = add
        self.reset()

    def reset(self) -> None:
        self.total: Optional[T] = None
        self.pending: Optional[T] = None
        self.num_seen = 0

    def push(self, sample: T) -> None:
        """Add one sample's statistics (samples must arrive in the loop's order)."""
        if self.pending is not None:
            self.total = self._add(self.total, self.pending)
        self.pending = sample
        self.num_seen += 1

    def finish(self, size: int) -> Optional[T]:
        """Return this rank's total without padding duplicates, given the dataset ``size``."""
        rank, world = dist_info()
        if self.pending is not None:
            last_position = rank + (self.num_seen - 1) * world
            if last_position < size:
                self.total = self._add(self.total, self.pending)
            self.pending = None
        if world > 1:
            seen = sum_across_ranks(torch.tensor([self.num_seen], dtype=torch.float64))
            expected = -(-size // world) * world
            if int(seen.item()) != expected:
                print_log(f'streaming metric saw {int(seen.item())} samples over {world} ranks for a dataset of '
                          f'{size}; expected {expected} (DefaultSampler with shuffle=False and round_up=True). '
                          'Padding duplicates may be counted.', logger='current', level=30)
        return self.total

