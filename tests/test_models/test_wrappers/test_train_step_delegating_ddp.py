"""TrainStepDelegatingDDP: the module's own train_step runs under DDP; listed parameters stay out of DDP."""
import pytest
import torch
import torch.distributed as dist
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS
from torch import nn

import calibseg  # noqa: F401
from calibseg.models.wrappers import DelegatedTrainStepMixin


class _Toy(DelegatedTrainStepMixin, BaseModel):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(3, 1)
        self.side = nn.Linear(3, 1)  # updated by hand, never in the DDP forward

    def ddp_ignored_parameter_names(self):
        return ['side.weight', 'side.bias']

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return dict(loss=self.net(inputs).pow(2).mean())

    def train_step(self, data, optim_wrapper, ddp_wrapper=None):
        with self.optim_context(optim_wrapper, ddp_wrapper):
            losses = self.loss_forward(data, ddp_wrapper)
        optim_wrapper.update_params(losses['loss'])
        with torch.no_grad():
            self.side.weight.add_(1.0)
        return dict(loss=losses['loss'].detach())


@pytest.fixture
def single_process_group(tmp_path):
    if dist.is_initialized():
        pytest.skip('a process group already exists')
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/pg', rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_train_step_is_the_modules(single_process_group):
    toy = _Toy()
    wrapper = MODEL_WRAPPERS.build(dict(type='TrainStepDelegatingDDP', module=toy, device_ids=None))
    optim = OptimWrapper(torch.optim.SGD(toy.net.parameters(), lr=0.1))
    before = toy.net.weight.detach().clone()
    side_before = toy.side.weight.detach().clone()
    out = wrapper.train_step(dict(inputs=torch.ones(4, 3)), optim)
    assert toy.delegated_train_steps == 1
    assert not torch.equal(toy.net.weight.detach(), before)  # the DDP forward's gradients reached the step
    assert out['loss'].ndim == 0
    assert torch.equal(toy.side.weight.detach(), side_before + 1.0)
    assert set(toy._ddp_params_and_buffers_to_ignore) == {'side.weight', 'side.bias'}


def test_plain_models_and_unknown_names_are_rejected(single_process_group):
    with pytest.raises(TypeError, match='DelegatedTrainStepMixin'):
        MODEL_WRAPPERS.build(dict(type='TrainStepDelegatingDDP', module=nn.Linear(2, 2), device_ids=None))

    class _Bad(_Toy):
        def ddp_ignored_parameter_names(self):
            return ['nope.weight']

    with pytest.raises(ValueError, match='nope.weight'):
        MODEL_WRAPPERS.build(dict(type='TrainStepDelegatingDDP', module=_Bad(), device_ids=None))
