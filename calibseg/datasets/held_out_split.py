"""A deterministic split of one dataset into a training part and a held-out part.

Meta-learning (γ-Net's meta batches) and ASLP (validation accuracy measured every epoch) need images from the
training set that the network never trains on. ``HeldOutSplit`` wraps any mmseg dataset config and keeps either
the held-out images or the rest; two configs that use the same ``dataset``, ``held_out`` and ``seed`` get
complementary parts, whatever the order in which they are built::

    train_dataloader = dict(dataset=dict(type='HeldOutSplit', dataset=duts_tr, part='train', held_out=1000))
    meta_dataloader = dict(dataset=dict(type='HeldOutSplit', dataset=duts_tr, part='held_out', held_out=1000))

The held-out indices are the first ``n`` of a permutation of ``range(len(dataset))`` drawn from a
``torch.Generator`` seeded with ``seed``; both parts keep the wrapped dataset's order.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Union

import torch
from mmseg.registry import DATASETS

__all__ = ['HeldOutSplit', 'held_out_indices']

PARTS = ('train', 'held_out')


def held_out_indices(num_samples: int, held_out: Union[int, float], seed: int = 0) -> List[int]:
    """Sorted indices of the held-out part: ``held_out`` images (int) or that fraction of them (float in (0, 1))."""
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)):
        raise TypeError(f'held_out must be an int (a number of images) or a float fraction, got {held_out!r}')
    if isinstance(held_out, float):
        if not 0.0 < held_out < 1.0:
            raise ValueError(f'a fractional held_out must lie in (0, 1), got {held_out}')
        count = max(1, int(round(held_out * num_samples)))
    else:
        count = held_out
    if not 0 < count < num_samples:
        raise ValueError(f'held_out={held_out} leaves no images in one part of a dataset of {num_samples} images')
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed))
    return sorted(order[:count].tolist())


@DATASETS.register_module()
class HeldOutSplit:
    """One part of a deterministic training/held-out split of ``dataset`` (see the module docstring).

    Args:
        dataset: the wrapped dataset's config (or a built dataset).
        part: ``'train'`` (everything but the held-out images) or ``'held_out'``.
        held_out: number of held-out images, or their fraction of the dataset.
        seed: seed of the permutation that picks the held-out images.
        lazy_init: defer loading the annotation list until first use (as mmengine's datasets do).
    """

    def __init__(self, dataset: Union[Dict[str, Any], Any], *, part: str, held_out: Union[int, float],
                 seed: int = 0, lazy_init: bool = False) -> None:
        if part not in PARTS:
            raise ValueError(f"HeldOutSplit part must be one of {PARTS}, got {part!r}")
        self.dataset = DATASETS.build(copy.deepcopy(dataset)) if isinstance(dataset, dict) else dataset
        self.part = part
        self.held_out = held_out
        self.seed = int(seed)
        self._indices: List[int] = []
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> Dict[str, Any]:
        return copy.deepcopy(self.dataset.metainfo)

    def full_init(self) -> None:
        """Load the wrapped dataset and select this part's indices."""
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        total = len(self.dataset)
        held = held_out_indices(total, self.held_out, self.seed)
        if self.part == 'held_out':
            self._indices = held
        else:
            chosen = set(held)
            self._indices = [i for i in range(total) if i not in chosen]
        self._fully_initialized = True

    @property
    def indices(self) -> List[int]:
        """Indices into the wrapped dataset, in its order."""
        self.full_init()
        return list(self._indices)

    def get_data_info(self, idx: int) -> Dict[str, Any]:
        self.full_init()
        return self.dataset.get_data_info(self._indices[idx])

    def __len__(self) -> int:
        self.full_init()
        return len(self._indices)

    def __getitem__(self, idx: int) -> Any:
        self.full_init()
        return self.dataset[self._indices[idx]]
