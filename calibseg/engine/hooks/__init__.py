from .aslp_hook import ASLPHook
from .reliability_diagram_hook import RELIABILITY_INFO_PREFIX, ReliabilityDiagramHook

__all__ = ['ASLPHook', 'RELIABILITY_INFO_PREFIX', 'ReliabilityDiagramHook']
