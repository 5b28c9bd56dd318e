from .amp_optim_wrapper import MixedPrecisionOptimWrapper

__all__ = ['MixedPrecisionOptimWrapper']
