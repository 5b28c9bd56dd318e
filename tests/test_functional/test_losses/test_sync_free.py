"""The losses' device path issues no host-device synchronisation (issue 16).

On CPU the path is forced with ``utils._FORCE_DEVICE_PATH`` (the same code CUDA tensors take) and every Tensor
method that reads a value back to the host is patched to count its calls; with CUDA the real thing runs under
``torch.cuda.set_sync_debug_mode('error')``.
"""
import pytest
import torch

from calibseg.functional import losses as L
from calibseg.functional.losses import fused
from calibseg.functional.losses import utils as loss_utils

READBACKS = ('item', 'tolist', 'nonzero', 'cpu', 'numpy', '__bool__', '__int__', '__float__', '__index__')

LOSSES = [
    (L.softmax_focal_loss, {}), (L.softmax_focal_loss, dict(gamma=torch.full((2, 1, 1), 2.0))),
    (L.adaptive_focal_loss, {}), (L.label_smoothing_loss, {}), (L.mbls_loss, {}), (L.mdca_loss, {}),
    (L.acls_loss, dict(margin=2.0)), (L.svls_loss, {}), (L.nacl_loss, {}), (L.nacl_loss, dict(distance='l2')),
]
CUDA_LOSSES = LOSSES


def _ids(cases):
    return [f'{fn.__name__}{"-tensor-gamma" if "gamma" in opts else ""}{"-l2" if "distance" in opts else ""}'
            for fn, opts in cases]


IDS = _ids(LOSSES)


@pytest.fixture
def readbacks(monkeypatch):
    """Count the calls of every value-reading Tensor method (they still work)."""
    calls = []
    for name in READBACKS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 6, 5, generator=gen) * 6
    target = torch.randint(0, 4, (2, 6, 5), generator=gen)
    target[0, :2] = 255
    weight = torch.rand(2, 6, 5, generator=gen) + 0.5
    return logits, target, weight


@pytest.mark.parametrize('loss_fn, options', LOSSES, ids=IDS)
def test_device_path_reads_nothing_back(monkeypatch, readbacks, loss_fn, options):
    logits, target, weight = _batch()
    class_weight = torch.tensor([1.0, 2.0, 0.5, 1.5])
    expected = loss_fn(logits, target, weight=weight, class_weight=class_weight, **options)  # CPU path
    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', True)
    leaf = logits.clone().requires_grad_()
    readbacks.clear()
    loss = loss_fn(leaf, target, weight=weight, class_weight=class_weight, **options)
    loss.backward()
    assert readbacks == []
    torch.testing.assert_close(loss.detach(), expected)
    # the readback counter does count (a test that cannot fail is a defect)
    readbacks.clear()
    bool(loss > 0)
    assert readbacks == ['__bool__']


def test_device_path_is_one_chunk(monkeypatch):
    logits, _, _ = _batch()
    z = logits.reshape(2, 4, -1)
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', 8)
    assert len(list(fused.pixel_chunks(z))) == 2 * 15  # 4 classes x 2 pixels per chunk
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', 2 * 4 * 30)
    assert list(fused.pixel_chunks(z)) == [(slice(0, 2), slice(None), slice(None))]  # both images at once
    monkeypatch.setattr(fused, 'CHUNK_ELEMENTS', 8)
    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', True)
    assert list(fused.pixel_chunks(z)) == [(slice(None), slice(None), slice(None))]


def test_device_path_checks_values_asynchronously(monkeypatch):
    logits, target, _ = _batch()
    monkeypatch.setattr(loss_utils, '_FORCE_DEVICE_PATH', True)
    bad = target.clone()
    bad[1, 0, 0] = 7
    # a CPU tensor's device assertion fires at once; on CUDA it fires at the next synchronisation
    with pytest.raises(RuntimeError, match=r'outside \[0, 4\)'):
        L.mbls_loss(logits, bad)
    nan = logits.clone()
    nan[0, 0, 0, 0] = float('nan')
    with pytest.raises(RuntimeError, match='finite'):
        L.mdca_loss(nan, target)
    with pytest.raises(RuntimeError, match='gamma'):
        L.softmax_focal_loss(logits, target, gamma=torch.full((2, 1, 1), -1.0))
    # the debug option restores the readable errors
    previous = loss_utils.set_sync_checks(True)
    try:
        with pytest.raises(ValueError, match=r'\[7\]'):
            L.mbls_loss(logits, bad)
    finally:
        loss_utils.set_sync_checks(previous)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('loss_fn, options', CUDA_LOSSES, ids=_ids(CUDA_LOSSES))
def test_no_synchronisation_on_cuda(loss_fn, options):
    logits, target, weight = (t.cuda() for t in _batch())
    options = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in options.items()}
    class_weight = torch.tensor([1.0, 2.0, 0.5, 1.5], device='cuda')
    leaf = logits.clone().requires_grad_()
    loss_fn(leaf, target, weight=weight, class_weight=class_weight, **options)  # warm-up (lazy inits may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        loss = loss_fn(leaf, target, weight=weight, class_weight=class_weight, **options)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert torch.isfinite(loss)
