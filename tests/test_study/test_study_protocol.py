"""calibseg.study.protocol: the protocol id (stable across versions), validation, the TS options."""
from __future__ import annotations

import pytest

from calibseg.calibrators import TemperatureScaling
from calibseg.study.protocol import (
    DEFAULT_SEVERITY,
    DEFAULT_TS_METHOD,
    DEMO_CORRUPTIONS,
    TS_METHODS,
    StudyProtocol,
    expand_corruptions,
    ts_options,
)


def test_default_is_the_benchmark_protocol():
    assert DEFAULT_TS_METHOD == 'grid-ece'
    ts = TemperatureScaling(num_classes=3, **ts_options(StudyProtocol().ts_method))
    assert ts.fit_method == 'grid' and ts.grid_metric == 'ece'
    assert ts.grid[0] == pytest.approx(0.1) and ts.grid[-1] == pytest.approx(10.0) and len(ts.grid) == 100
    assert ts_options('nll') == {'method': 'nll'} and set(TS_METHODS) == {'grid-ece', 'grid-nll', 'nll'}


def test_protocol_id_is_stable_and_separates_protocols():
    # the id of the committed NLL-fit demo study (docs/study/nll/study.csv, the demo data root as option): moving the
    # code into the package must not make resumed studies refuse their own tables
    nll = StudyProtocol(ts_method='nll', cfg_options={'val_dataloader.dataset.data_root':
                                                      'data/demo/VOCdevkit/VOC2012'})
    assert nll.id == '6268b4ab678a'  # the protocol_id column of docs/study/nll/study.csv
    assert len({nll.id, StudyProtocol().id, StudyProtocol(ts_method='grid-nll').id,
                StudyProtocol(split_seed=1).id, StudyProtocol(fit_split='a', test_split='b').id}) == 5
    assert StudyProtocol().as_dict() == {
        'split': {'source': 'val_dataloader', 'fit_fraction': 0.5, 'seed': 0}, 'ts_method': 'grid-ece',
        'fit_pixels_per_image': 16384, 'ignore_index': 255, 'cfg_options': {}}


@pytest.mark.parametrize('kwargs, match', [
    (dict(fit_split='val_dataloader'), 'go together'),
    (dict(fit_fraction=1.0), r'fit_fraction must lie in \(0, 1\)'),
    (dict(fit_pixels_per_image=-1), 'fit_pixels_per_image'),
    (dict(ts_method='ece'), 'ts_method must be one of'),
])
def test_bad_protocols_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StudyProtocol(**kwargs)


def test_corruptions_enter_the_id_only_when_set():
    from calibseg.datasets.transforms.corruptions import CORRUPTION_FAMILIES, corruption_names

    plain = StudyProtocol()
    assert StudyProtocol(corruptions=()).id == plain.id and StudyProtocol(corruptions=['none']).id == plain.id
    assert StudyProtocol(corruption_severity=5).id == plain.id  # a severity without corruptions is no setting
    demo = StudyProtocol(corruptions=['demo'])
    assert demo.corruptions == DEMO_CORRUPTIONS and demo.corruption_severity == DEFAULT_SEVERITY == 3
    assert demo.as_dict()['shift'] == {'corruptions': list(DEMO_CORRUPTIONS), 'severity': 3}
    assert demo.without_shift().id == plain.id and demo.without_shift().as_dict() == plain.as_dict()
    assert len({plain.id, demo.id, StudyProtocol(corruptions=['demo'], corruption_severity=2).id,
                StudyProtocol(corruptions=['fog']).id}) == 4
    # one corruption per family, each a known name
    assert sorted(next(f for f, names in CORRUPTION_FAMILIES.items() if c in names) for c in DEMO_CORRUPTIONS) == \
        sorted(CORRUPTION_FAMILIES)
    assert StudyProtocol(corruptions=['all']).corruptions == tuple(corruption_names())
    assert StudyProtocol(corruptions=['blur', 'fog', 'fog']).corruptions == (*CORRUPTION_FAMILIES['blur'], 'fog')
    assert expand_corruptions(['demo', 'gaussian_noise']) == DEMO_CORRUPTIONS


@pytest.mark.parametrize('kwargs, match', [
    (dict(corruptions=['smoke']), 'unknown corruption'),
    (dict(corruptions=['fog'], corruption_severity=6), 'severity must be'),
    (dict(corruptions='fog'), 'sequence of names'),
])
def test_bad_shift_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StudyProtocol(**kwargs)
