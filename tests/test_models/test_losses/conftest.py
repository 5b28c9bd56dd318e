"""Fixtures for the registered losses: a small batch and a real mmseg decode head to run them in."""
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.models.decode_heads import FCNHead
from mmseg.structures import SegDataSample

import calibseg.models.losses  # noqa: F401  (registers the losses in mmseg's MODELS)

NUM_CLASSES = 5
IGNORE = 255


@pytest.fixture
def seg_batch():
    """``(2, 5, 8, 8)`` logits and ``(2, 8, 8)`` labels with ignored pixels."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, NUM_CLASSES, 8, 8, generator=gen) * 4
    target = torch.randint(0, NUM_CLASSES, (2, 8, 8), generator=gen)
    target[torch.rand(2, 8, 8, generator=gen) < 0.2] = IGNORE
    return logits, target


@pytest.fixture
def head_losses(seg_batch):
    """Run ``loss_decode`` inside ``FCNHead.loss_by_feat``; return (loss dict, logits leaf)."""

    def run(loss_decode, **head_options):
        head = FCNHead(in_channels=4, channels=4, num_convs=1, num_classes=NUM_CLASSES,
                       norm_cfg=dict(type='BN'), loss_decode=loss_decode, **head_options)
        logits, target = seg_batch
        samples = []
        for label in target:
            sample = SegDataSample()
            sample.gt_sem_seg = PixelData(data=label.unsqueeze(0))
            samples.append(sample)
        leaf = logits.clone().requires_grad_()
        return head.loss_by_feat(leaf, samples), leaf

    return run
