"""Registered losses, as a decode head calls them, read no value back to the host on the device path."""
import pytest
import torch
from mmseg.registry import MODELS

import calibseg.models.losses  # noqa: F401  (registers the losses)
from calibseg.functional.losses import utils as loss_utils

READBACKS = ('item', 'tolist', 'nonzero', 'cpu', 'numpy', '__bool__', '__int__', '__float__', '__index__')


@pytest.mark.parametrize('loss_type', ['SoftmaxFocalLoss', 'AdaptiveFocalLoss', 'LabelSmoothingLoss', 'MbLSLoss',
                                       'MDCALoss', 'ACLSLoss'])
def test_registered_loss_reads_nothing_back(monkeypatch, loss_type):
    loss = MODELS.build(dict(type=loss_type, class_weight=[1.0, 2.0, 0.5]))
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 3, 4, 4, generator=gen) * 5).requires_grad_()
    target = torch.randint(0, 3, (2, 4, 4), generator=gen)
    target[0, 0] = 255
    expected = loss(logits, target, weight=None, ignore_index=255)
    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', True)
    calls = []
    for name in READBACKS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    value = loss(logits, target, weight=None, ignore_index=255)
    value.backward()
    assert calls == []
    torch.testing.assert_close(value.detach(), expected.detach())
