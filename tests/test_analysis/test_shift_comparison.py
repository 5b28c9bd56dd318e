"""calibseg.analysis.shift_comparison: several random-weight models analysed under corruption on the tiny VOC set;
the comparison's numbers against the models' own results.json, the same images for every model, resuming, refusals,
mmengine work dirs, a one-channel head."""
import json
import math
import os
import os.path as osp

import pytest
from calibseg_testing import DEMO_CONFIG, ROOT, save_random_checkpoint, tiny_run_options

from calibseg.analysis.shift_comparison import ShiftEntry, compare_under_shift, comparison_table, entry_from_work_dir

CORRUPTIONS = ['gaussian_noise', 'fog']
SEVERITIES = [1, 3]


def _compare(entries, out, tiny_voc, **kw):
    return compare_under_shift(entries, out_dir=str(out), corruptions=CORRUPTIONS, severities=SEVERITIES,
                               cfg_options=tiny_run_options(tiny_voc), worst_k=0, verbose=False, **kw)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ckpts')
    return [ShiftEntry('ce', DEMO_CONFIG, save_random_checkpoint(str(folder / 'a.pth'), seed=0), ('ts',)),
            ShiftEntry('other', DEMO_CONFIG, save_random_checkpoint(str(folder / 'b.pth'), seed=1, logit_scale=60.0))]


@pytest.fixture(scope='module')
def compared(models, tiny_voc, tmp_path_factory):
    out = tmp_path_factory.mktemp('compare') / 'out'
    return out, _compare(models, out, tiny_voc)


def test_outputs_and_numbers_equal_each_models_results(compared):
    out, table = compared
    assert json.loads((out / 'comparison.json').read_text()) == json.loads(json.dumps(table))
    for name in ('comparison_ece_15.png', 'comparison_miou.png'):
        assert (out / name).stat().st_size > 1000
    text = (out / 'comparison.md').read_text()
    for part in ('## Summary', '## Clean', '## Severity 1', '## Severity 3', '](ce/report.md)',
                 '![comparison_ece_15.png](comparison_ece_15.png)', '| ce+ts |'):
        assert part in text, part
    assert list(table['lines']) == ['ce', 'ce+ts', 'other']
    assert table['severities'] == SEVERITIES and table['corruptions'] == sorted(CORRUPTIONS)
    # every value: the model's own clean headline, or the plain mean of its per-corruption cells
    for line, model, method in (('ce', 'ce', 'uncalibrated'), ('ce+ts', 'ce', 'ts'), ('other', 'other',
                                                                                       'uncalibrated')):
        results = json.loads((out / model / 'results.json').read_text())
        for key in ('ECE_15', 'mIoU', 'OE_15', 'NLL', 'Brier'):
            values = table['lines'][line][key]
            assert values['0'] == results['methods'][method]['headline'][key]
            for s in SEVERITIES:
                cells = [results['shift'][c][str(s)][method]['headline'][key] for c in CORRUPTIONS]
                assert values[str(s)] == pytest.approx(sum(cells) / len(cells), rel=1e-12), (line, key, s)
    # the corruption changes something: not every severity equals the clean value
    assert any(table['lines']['ce']['ECE_15'][str(s)] != table['lines']['ce']['ECE_15']['0'] for s in SEVERITIES)


def test_every_model_is_evaluated_on_the_same_images(compared):
    out, table = compared
    ce = json.loads((out / 'ce' / 'results.json').read_text())
    other = json.loads((out / 'other' / 'results.json').read_text())
    assert ce['fit_split'].startswith('held-out') and other['fit_split'] is None  # no calibrator: no fit split
    paths = [sorted(r['img_path'] for r in run['methods']['uncalibrated']['images']) for run in (ce, other)]
    assert paths[0] == paths[1] and len(paths[0]) == 4  # tiny VOC: 5 val images, 1 held out for fitting ts
    assert table['same_images'] is True
    assert [m['test_images'] for m in table['models']] == [4, 4]


def test_resume_reuses_every_shift_cell_and_refuses_without(compared, models, tiny_voc):
    out, table = compared
    with pytest.raises(FileExistsError, match='already holds a comparison'):
        _compare(models, out, tiny_voc)
    cells = {p: os.stat(osp.join(out, p)).st_mtime_ns for m in ('ce', 'other')
             for p in [osp.join(m, 'shift', f) for f in os.listdir(out / m / 'shift')]}
    assert len(cells) == 2 * len(CORRUPTIONS) * len(SEVERITIES)
    again = _compare(models, out, tiny_voc, resume=True)
    assert {p: os.stat(osp.join(out, p)).st_mtime_ns for p in cells} == cells
    assert again['lines'] == table['lines']


@pytest.mark.parametrize('entries, error, match', [
    (lambda m: [], ValueError, 'no model'),
    (lambda m: [m[0], ShiftEntry('ce', m[1].config, m[1].checkpoint)], ValueError, 'given twice'),
    (lambda m: [ShiftEntry('a/b', m[0].config, m[0].checkpoint)], ValueError, 'use letters'),
    (lambda m: [ShiftEntry('a', m[0].config, 'missing.pth')], FileNotFoundError, 'checkpoint not found'),
    (lambda m: [ShiftEntry('a', m[0].config, m[0].checkpoint, ('platt',))], ValueError,
     "unknown calibrator 'platt'"),
])
def test_bad_entries_are_refused_before_any_work(models, tmp_path, entries, error, match):
    with pytest.raises(error, match=match):
        compare_under_shift(entries(models), out_dir=str(tmp_path / 'o'), corruptions=['fog'])
    assert not (tmp_path / 'o').exists()


def test_bad_sweep_is_refused(models, tmp_path):
    with pytest.raises(ValueError, match='unknown corruption'):
        compare_under_shift(models, out_dir=str(tmp_path / 'o'), corruptions=['rainbow'])
    with pytest.raises(ValueError, match='severity must be an integer'):
        compare_under_shift(models, out_dir=str(tmp_path / 'o'), corruptions=['fog'], severities=[6])
    with pytest.raises(ValueError, match='no corruption'):
        compare_under_shift(models, out_dir=str(tmp_path / 'o'), corruptions=[])


def test_entry_from_work_dir(tmp_path, models):
    run = tmp_path / 'mbls'
    run.mkdir()
    with pytest.raises(FileNotFoundError, match='no checkpoint'):
        entry_from_work_dir(str(run))
    ckpt = run / 'iter_4.pth'
    ckpt.write_bytes(open(models[0].checkpoint, 'rb').read())
    (run / 'last_checkpoint').write_text(str(ckpt))
    with pytest.raises(FileNotFoundError, match='no dumped config'):
        entry_from_work_dir(str(run))
    (run / 'fcn_mbls.py').write_text(open(DEMO_CONFIG).read())
    entry = entry_from_work_dir(str(run), calibrators=['ts'])
    assert entry == ShiftEntry('mbls', str(run / 'fcn_mbls.py'), str(ckpt), ('ts',))
    (run / 'other.py').write_text('x = 1\n')
    with pytest.raises(ValueError, match='several configs'):
        entry_from_work_dir(str(run))


def test_table_marks_different_image_lists_and_missing_values():
    def run(paths, ece):
        cell = {'uncalibrated': {'headline': {'ECE_15': ece, 'mIoU': None}}}
        return {'binary': False, 'test_images': len(paths), 'fit_split': None,
                'methods': {'uncalibrated': {'headline': {'ECE_15': 1.0, 'mIoU': 50.0},
                                             'images': [{'img_path': p} for p in paths]}},
                'shift': {'fog': {'2': cell}}}
    entries = [ShiftEntry('a', 'a.py', 'a.pth'), ShiftEntry('b', 'b.py', 'b.pth')]
    table = comparison_table(entries, {'a': run(['x', 'y'], 3.0), 'b': run(['x'], 5.0)})
    assert table['same_images'] is False
    assert table['lines']['b']['ECE_15'] == {'0': 1.0, '2': 5.0}
    assert table['lines']['a']['mIoU'] == {'0': 50.0, '2': None}


def test_one_channel_heads_are_compared_by_saliency_measures(demo_generator, tmp_path):
    demo_generator.generate_duts(str(tmp_path / 'data'), num_train=2, num_test=4, size=32, seed=0)
    config = osp.join(ROOT, 'configs', 'saliency', 'fcn_r18-d16_bce_1xb8-30ep_demo-duts-96x96.py')
    root = str(tmp_path / 'data' / 'DUTS')
    entries = [ShiftEntry('bce', config, save_random_checkpoint(str(tmp_path / 'bce.pth'), config, logit_scale=3.0))]
    table = compare_under_shift(entries, out_dir=str(tmp_path / 'out'), corruptions=['contrast'], severities=[5],
                                cfg_options={'test_dataloader.dataset.data_root': root,
                                             'val_dataloader.dataset.data_root': root,
                                             'model.data_preprocessor.size': (32, 32)}, worst_k=0, verbose=False)
    assert table['binary'] is True and table['keys'][:3] == ['MAE', 'maxF', 'ECE_10']
    for key in ('MAE', 'maxF', 'ECE_10'):
        assert all(v is not None and math.isfinite(v) for v in table['lines']['bce'][key].values()), key
    for name in ('comparison_mae.png', 'comparison_maxf.png', 'comparison_ece_10.png'):
        assert (tmp_path / 'out' / name).stat().st_size > 1000
    assert '| method | MAE | max-F | ECE_10 (%) |' in (tmp_path / 'out' / 'comparison.md').read_text()
