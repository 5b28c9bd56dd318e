"""OptimizerState: a model-owned optimiser's per-parameter state round-trips through the owner's state_dict."""
import torch
from torch import nn

from calibseg.models.utils import OptimizerState


class _Owner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(3, 2)
        self.opt_state = OptimizerState(torch.optim.Adam(self.net.parameters(), lr=0.1))

    def step(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        optimizer = self.opt_state.optimizer
        optimizer.zero_grad()
        self.net(torch.randn(4, 3, generator=gen)).square().sum().backward()
        optimizer.step()


def test_state_round_trips_and_resumes_identically():
    model = _Owner()
    model.step(1)
    model.step(2)
    saved = model.state_dict()
    # Adam's step, exp_avg and exp_avg_sq of both parameters, next to the model's own entries
    assert {f'opt_state.{i}.{name}' for i in range(2) for name in ('step', 'exp_avg', 'exp_avg_sq')} \
        <= set(saved)
    fresh = _Owner()
    assert fresh.load_state_dict(saved, strict=True).missing_keys == []
    model.step(3)
    fresh.step(3)  # the resumed optimiser makes the same update as the uninterrupted one
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_before_the_first_step_and_unexpected_keys():
    model = _Owner()
    assert not any(key.startswith('opt_state.') for key in model.state_dict())  # no state yet
    fresh = _Owner()
    fresh.step(1)
    fresh.load_state_dict(model.state_dict())  # loading the empty state clears the stepped one
    assert fresh.opt_state.optimizer.state_dict()['state'] == {}
    bad = dict(model.state_dict(), **{'opt_state.7.exp_avg': torch.zeros(1), 'opt_state.x': torch.zeros(1)})
    result = fresh.load_state_dict(bad, strict=False)
    assert sorted(result.unexpected_keys) == ['opt_state.7.exp_avg', 'opt_state.x']
