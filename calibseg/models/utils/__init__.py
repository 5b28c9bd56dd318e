"""Building blocks of calibseg's segmentors that are not segmentors themselves (as in mmseg's ``models/utils``)."""
from .gamma_net import GAMMA_NET_PER, GammaNet
from .meta_batch_stream import MetaBatchStream
from .optimizer_state import OptimizerState

__all__ = ['GAMMA_NET_PER', 'GammaNet', 'MetaBatchStream', 'OptimizerState']
