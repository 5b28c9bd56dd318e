"""Shared fixtures: tiny copies of the embedded demo data, generated once per test session.

Helpers that tests import live in ``calibseg_testing.py`` (a uniquely named module: several folders have their
own ``conftest.py``, so ``from conftest import ...`` would be ambiguous)."""
from __future__ import annotations

import os.path as osp

import pytest


@pytest.fixture(scope='session')
def demo_generator():
    """The demo-data generator package (``generate_voc_aug``, ``generate_duts``, ``generate_demo_data``)."""
    from calibseg.datasets import demo  # imported here: collecting the pure-core tests needs no OpenMMLab

    return demo


@pytest.fixture(scope='session')
def tiny_voc(tmp_path_factory, demo_generator) -> str:
    """A PASCAL VOC aug layout with 12 train+aug and 5 val images (odd val size) of 32 px."""
    root = tmp_path_factory.mktemp('tiny_voc')
    demo_generator.generate_voc_aug(str(root), num_train=12, num_val=5, size=32, seed=0)
    return osp.join(str(root), 'VOCdevkit', 'VOC2012')
