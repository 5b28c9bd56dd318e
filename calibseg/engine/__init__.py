from .hooks import ReliabilityDiagramHook

__all__ = ['ReliabilityDiagramHook']
