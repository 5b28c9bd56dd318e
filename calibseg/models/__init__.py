from . import losses  # noqa: F401  (registers calibseg's losses in mmseg's MODELS)
