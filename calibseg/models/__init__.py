from . import losses, wrappers  # noqa: F401  (registers calibseg's losses and model wrappers)
