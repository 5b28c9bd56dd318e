"""What makes two rows of a study comparable: the data split, the temperature-scaling protocol and the options.

A table holds one protocol; :attr:`StudyProtocol.id` (a hash of :meth:`StudyProtocol.as_dict`) is stored in every
row, and a run under another protocol refuses to append to it.

Temperature-scaling protocols (``ts_method``), all :class:`~calibseg.calibrators.TemperatureScaling` fits:

* ``'grid-ece'`` (default): the benchmark's protocol (Tao et al., ICLR 2024, "A Benchmark Study on Calibration"):
  ``T`` in the grid ``{0.1, 0.2, ..., 10.0}`` with the lowest top-label ECE-15 on the fit split.
* ``'grid-nll'``: the same grid, lowest NLL.
* ``'nll'``: minimise the NLL over ``T`` in ``[0.01, 100]`` (safeguarded Newton on ``1/T``; Guo et al., ICML 2017).

Robustness (optional, ``corruptions``): every model is measured again on corrupted copies of the test split
(:class:`~calibseg.datasets.transforms.CorruptImage` after the image is loaded, one severity), with the ``T`` fitted
on clean data, as the benchmark's robustness question asks (Tao et al., ICLR 2024: accuracy under ImageNet-C style
corruption against calibration). :data:`DEMO_CORRUPTIONS` is one corruption per family. The shift settings enter
:meth:`StudyProtocol.as_dict` (and the id) only when corruptions are set, so protocols without them keep the ids
of tables written before robustness existed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

__all__ = ['StudyProtocol', 'TS_METHODS', 'DEFAULT_TS_METHOD', 'DEFAULT_FIT_PIXELS', 'DEMO_CORRUPTIONS',
           'DEFAULT_SEVERITY', 'ts_options', 'expand_corruptions']

DEFAULT_FIT_PIXELS = 16384
#: TemperatureScaling options of each study protocol
_TS = {'grid-ece': dict(method='grid', grid_metric='ece'), 'grid-nll': dict(method='grid', grid_metric='nll'),
       'nll': dict(method='nll')}
TS_METHODS = tuple(_TS)
DEFAULT_TS_METHOD = 'grid-ece'
#: one corruption per family (noise, blur, weather, digital): the demo study's robustness set. Chosen from the demo
#: CE model's sweep (docs/shift_comparison/ce/report.md, severity 3, clean mIoU 30.0): each costs 8-16 mIoU points,
#: none destroys the image (contrast: 3.7 mIoU left) or leaves it nearly unchanged (jpeg_compression: 28.4)
DEMO_CORRUPTIONS = ('gaussian_noise', 'motion_blur', 'fog', 'pixelate')
#: the middle of the five severities
DEFAULT_SEVERITY = 3


def expand_corruptions(names: Sequence[str]) -> Tuple[str, ...]:
    """Corruption names from names, family names, ``'all'`` or ``'demo'`` (:data:`DEMO_CORRUPTIONS`), checked,
    without duplicates, in the given order; ``()`` for ``()`` or ``['none']``.

    Example:
        >>> expand_corruptions(['demo'])
        ('gaussian_noise', 'motion_blur', 'fog', 'pixelate')
    """
    names = [n for n in names if n != 'none']
    if not names:
        return ()
    from calibseg.datasets.transforms.corruptions import valid_corruptions

    expanded = [c for n in names for c in (DEMO_CORRUPTIONS if n == 'demo' else [n])]
    return tuple(valid_corruptions(expanded))


def ts_options(ts_method: str) -> Dict[str, str]:
    """Keyword arguments of :class:`~calibseg.calibrators.TemperatureScaling` for a study ``ts_method``.

    Example:
        >>> ts_options('grid-ece')
        {'method': 'grid', 'grid_metric': 'ece'}
    """
    if ts_method not in _TS:
        raise ValueError(f'ts_method must be one of {TS_METHODS}, got {ts_method!r}')
    return dict(_TS[ts_method])


@dataclass(frozen=True)
class StudyProtocol:
    """The measurement protocol of a study.

    Args:
        split_source: dataloader key of the config cut into a fit part and a test part by
            :class:`~calibseg.datasets.HeldOutSplit` (``held_out=fit_fraction``, ``seed=split_seed``).
        fit_fraction: fraction of ``split_source`` used to fit the temperature, in (0, 1).
        split_seed: seed of the split and of the per-image pixel subsampling.
        fit_split: fit on this dataloader of the config instead (with ``test_split``).
        test_split: measure on this dataloader of the config (with ``fit_split``).
        ts_method: ``'grid-ece'`` (the benchmark's), ``'grid-nll'`` or ``'nll'`` (see the module docstring).
        fit_pixels_per_image: labelled pixels kept per fit image (0: all).
        ignore_index: label value excluded everywhere.
        cfg_options: settings merged into every config.
        corruptions: also measure every model on corrupted copies of the test split (names, family names,
            ``'all'`` or ``'demo'``; expanded by :func:`expand_corruptions`), with the clean-fitted ``T``.
        corruption_severity: the severity (1 ... 5) of every corruption.

    Example:
        >>> p = StudyProtocol(ts_method='nll')
        >>> p.as_dict()['split'], len(p.id)
        ({'source': 'val_dataloader', 'fit_fraction': 0.5, 'seed': 0}, 12)
    """

    split_source: str = 'val_dataloader'
    fit_fraction: float = 0.5
    split_seed: int = 0
    fit_split: Optional[str] = None
    test_split: Optional[str] = None
    ts_method: str = DEFAULT_TS_METHOD
    fit_pixels_per_image: int = DEFAULT_FIT_PIXELS
    ignore_index: int = 255
    cfg_options: Dict[str, Any] = field(default_factory=dict)
    corruptions: Tuple[str, ...] = ()
    corruption_severity: int = DEFAULT_SEVERITY

    def __post_init__(self) -> None:
        if bool(self.fit_split) != bool(self.test_split):
            raise ValueError('fit_split and test_split go together')
        if not 0.0 < self.fit_fraction < 1.0:
            raise ValueError(f'fit_fraction must lie in (0, 1), got {self.fit_fraction}')
        if isinstance(self.fit_pixels_per_image, bool) or not isinstance(self.fit_pixels_per_image, int) \
                or self.fit_pixels_per_image < 0:
            raise ValueError(f'fit_pixels_per_image must be an int >= 0, got {self.fit_pixels_per_image!r}')
        ts_options(self.ts_method)
        if isinstance(self.corruptions, str):
            raise ValueError(f'corruptions must be a sequence of names, got the string {self.corruptions!r}')
        object.__setattr__(self, 'corruptions', expand_corruptions(tuple(self.corruptions)))
        if self.corruptions:
            from calibseg.datasets.transforms.corruptions import check_severity

            object.__setattr__(self, 'corruption_severity', check_severity(self.corruption_severity))

    def without_shift(self) -> StudyProtocol:
        """The same protocol without corruptions (the clean part of the measurement)."""
        return dataclasses.replace(self, corruptions=())

    def as_dict(self) -> Dict[str, Any]:
        """The protocol as plain data (what :attr:`id` hashes)."""
        split = ({'fit': self.fit_split, 'test': self.test_split} if self.fit_split else
                 {'source': self.split_source, 'fit_fraction': self.fit_fraction, 'seed': self.split_seed})
        out = {'split': split, 'ts_method': self.ts_method, 'fit_pixels_per_image': self.fit_pixels_per_image,
               'ignore_index': self.ignore_index, 'cfg_options': dict(self.cfg_options or {})}
        if self.corruptions:  # absent otherwise: the ids of tables without robustness stay what they were
            out['shift'] = {'corruptions': list(self.corruptions), 'severity': self.corruption_severity}
        return out

    @property
    def id(self) -> str:
        """12 hex digits of the SHA-256 of :meth:`as_dict` in canonical JSON."""
        text = json.dumps(self.as_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]
