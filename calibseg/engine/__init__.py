from .hooks import ReliabilityDiagramHook
from .optim import MixedPrecisionOptimWrapper

__all__ = ['ReliabilityDiagramHook', 'MixedPrecisionOptimWrapper']
