from . import losses, segmentors, wrappers  # noqa: F401  (registers calibseg's losses, segmentors and model wrappers)
