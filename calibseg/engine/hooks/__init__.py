from .reliability_diagram_hook import RELIABILITY_INFO_PREFIX, ReliabilityDiagramHook

__all__ = ['RELIABILITY_INFO_PREFIX', 'ReliabilityDiagramHook']
