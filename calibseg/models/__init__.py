from . import losses, segmentors, utils, wrappers  # noqa: F401  (registers calibseg's losses, segmentors and model wrappers)
