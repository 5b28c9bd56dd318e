"""Keys under which calibseg's metrics publish results in mmengine's ``MessageHub`` runtime info.

Metrics (:mod:`calibseg.evaluation.metrics`) write these entries and hooks (:mod:`calibseg.engine.hooks`) read
them, so the keys live here, below both: the engine imports evaluation, never the reverse.
"""

#: ``RELIABILITY_INFO_PREFIX + <metric prefix>`` holds a metric's reliability record for the last evaluation
#: (read, drawn and removed by :class:`~calibseg.engine.hooks.ReliabilityDiagramHook`).
RELIABILITY_INFO_PREFIX = 'calibseg/reliability/'

__all__ = ['RELIABILITY_INFO_PREFIX']
