"""calibseg: calibration losses, per-pixel calibration metrics and post-hoc calibration for mmsegmentation.

``import calibseg`` (or ``custom_imports = dict(imports=['calibseg'])`` in a config) registers calibseg's
modules into mmseg's registries and the ``trusted://`` checkpoint scheme of :mod:`calibseg.compat`; it has no
other side effect. The pure-PyTorch core (:mod:`calibseg.functional`) imports no OpenMMLab package and is
usable without mmseg installed: then nothing is registered.
"""
from .version import __version__

try:
    import mmseg  # noqa: F401
except ImportError:  # the functional core works without OpenMMLab
    mmseg = None
else:
    from . import compat, datasets, engine, evaluation, models  # noqa: F401  (registration)

__all__ = ['__version__']
