"""MixedPrecisionOptimWrapper: the AMP demo config trains on CPU under bfloat16 autocast with float32 losses."""
import math
import os.path as osp

import pytest
import torch
from calibseg_testing import ROOT, tiny_run_options
from mmengine.optim import AmpOptimWrapper

from calibseg import apis
from calibseg.engine.optim import MixedPrecisionOptimWrapper

AMP_CONFIG = osp.join(ROOT, 'configs', 'baseline', 'fcn_r18-d16_ce-amp_1xb8-40it_demo-voc12aug-96x96.py')


def test_amp_config_trains_a_calibration_loss_on_cpu_in_bfloat16(tiny_voc, tmp_path):
    # the AMP demo config with MbLS in place of the CE: the head runs in bf16, the loss in float32
    seen = {}
    original = apis.runs.build_runner

    def record(name, output):  # returns None: the hook leaves the output alone
        seen.setdefault(name, output.dtype)

    def build_and_hook(cfg, **kwargs):
        runner = original(cfg, **kwargs)
        head = runner.model.decode_head
        head.conv_seg.register_forward_hook(lambda module, inputs, output: record('logits', output))
        head.loss_decode.register_forward_hook(lambda module, inputs, output: record('loss', output))
        return runner

    options = dict(tiny_run_options(tiny_voc, max_iters=2),
                   **{'model.decode_head.loss_decode': dict(_delete_=True, type='MbLSLoss'),
                      'default_hooks.checkpoint.interval': 2,
                      # training only (bf16 convolutions are slow on CPUs without bf16 units)
                      'val_cfg': None, 'val_dataloader': None, 'val_evaluator': None})
    mp = pytest.MonkeyPatch()
    mp.setattr(apis.runs, 'build_runner', build_and_hook)
    try:
        runner = apis.train(AMP_CONFIG, work_dir=str(tmp_path / 'run'), cfg_options=options, quiet=True)
    finally:
        mp.undo()
    assert runner.iter == 2
    assert type(runner.model.decode_head.loss_decode).__name__ == 'MbLSLoss'
    wrapper = runner.optim_wrapper
    assert isinstance(wrapper, MixedPrecisionOptimWrapper) and isinstance(wrapper, AmpOptimWrapper)
    assert wrapper.cast_dtype == torch.bfloat16
    assert seen == {'logits': torch.bfloat16, 'loss': torch.float32}  # bf16 autocast; float32 loss
    losses = [v for k, v in runner.message_hub.log_scalars.items() if k.startswith('train/loss')]
    assert losses and all(math.isfinite(h.current()) for h in losses)
    assert all(p.dtype == torch.float32 for p in runner.model.parameters())  # float32 master weights
    assert osp.isfile(tmp_path / 'run' / 'iter_2.pth')


def test_cpu_wrapper_refuses_float16():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match='bfloat16'):
        MixedPrecisionOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), dtype='float16')


def test_cpu_wrapper_steps_like_sgd_without_scaling():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    reference = torch.nn.Linear(3, 1)
    reference.load_state_dict(model.state_dict())
    wrapper = MixedPrecisionOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), dtype='bfloat16')
    x = torch.randn(4, 3)
    with wrapper.optim_context(model):
        loss = model(x).float().square().mean()
    wrapper.update_params(loss)
    assert loss.dtype == torch.float32
    grad_loss = reference(x).square().mean()
    grad_loss.backward()
    with torch.no_grad():
        for p in reference.parameters():
            p -= 0.1 * p.grad
    # the same step up to bfloat16 rounding of the forward pass (no loss scale left in the gradients)
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=2e-2)
    assert 'loss_scaler' in wrapper.state_dict()
