"""The calibrators' short names (``ts``, ``cts``, ``vs``, ``lts``; ``ts``/``tsb`` for one-channel heads).

The short names are what ``tools/fit_calibrator.py --method``, :func:`calibseg.apis.fit_calibrator` and the post-hoc
configs (``model.calibrator.method``) accept; :func:`resolve_calibrator_method` turns one into a class name of
:data:`calibseg.calibrators.CALIBRATORS` for a head with a given number of logit channels.
"""
from typing import Dict

__all__ = ['CALIBRATOR_ALIASES', 'BINARY_CALIBRATOR_ALIASES', 'resolve_calibrator_method']

#: Short names of the multi-class calibrators.
CALIBRATOR_ALIASES: Dict[str, str] = {
    'ts': 'TemperatureScaling',
    'cts': 'ClasswiseTemperatureScaling',
    'vs': 'VectorScaling',
    'lts': 'LocalTemperatureScaling',
}
#: Short names of the calibrators of one-channel heads: ``ts`` is the binary temperature, ``tsb`` adds a bias.
BINARY_CALIBRATOR_ALIASES: Dict[str, str] = {
    'ts': 'BinaryTemperatureScaling',
    'tsb': 'BinaryTemperatureBiasScaling',
}


def resolve_calibrator_method(method: str, out_channels: int) -> str:
    """The calibrator class name for ``method`` (a short name or a class name) on a head with ``out_channels``.

    Raises:
        ValueError: an unknown name, or a calibrator that does not fit the head (a binary calibrator on a
            multi-class head, or a multi-class one on a one-channel head).

    Example:
        >>> resolve_calibrator_method('ts', 21), resolve_calibrator_method('ts', 1)
        ('TemperatureScaling', 'BinaryTemperatureScaling')
    """
    aliases = BINARY_CALIBRATOR_ALIASES if out_channels == 1 else CALIBRATOR_ALIASES
    if method in aliases:
        return aliases[method]
    if method in aliases.values():
        return method
    kind = 'a one-channel (binary) head' if out_channels == 1 else f'a {out_channels}-class head'
    raise ValueError(f'calibrator method {method!r} does not apply to {kind}; choose one of '
                     f'{sorted(aliases)} (or the class names {sorted(aliases.values())})')
