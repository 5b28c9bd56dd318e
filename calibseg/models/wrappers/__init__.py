from .train_step_delegating_ddp import DelegatedTrainStepMixin, TrainStepDelegatingDDP

__all__ = ['TrainStepDelegatingDDP', 'DelegatedTrainStepMixin']
