"""tools/calibration_study.py as a command line: one process and torchrun with 2 processes give the same row;
exit status and messages of failing models, bad options and a table of another protocol."""
from __future__ import annotations

import pytest
from study_testing import make_study_models, run_tool, study_tool_command

from calibseg.study import read_table


@pytest.fixture(scope='module')
def models(tiny_voc, tmp_path_factory):
    return make_study_models(tmp_path_factory.mktemp('study_cli'), tiny_voc)


def _args(models, out, *more):
    return ['--models', f"{models['config']}:{models['work_dir'] / 'iter_2.pth'}", '--out', str(out),
            '--log-every', '0', '--ts-method', 'nll', *more]


def test_one_and_two_processes_give_the_same_row(models, tmp_path):
    single = tmp_path / 'single.csv'
    proc = run_tool(study_tool_command(*_args(models, single)))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert '[study] done: 1 measured, 0 failed' in proc.stdout
    dist = tmp_path / 'dist.csv'
    proc = run_tool(study_tool_command(*_args(models, dist), nproc=2))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (one,), (two,) = read_table(str(single)), read_table(str(dist))
    assert two['world_size'] == '2' and one['world_size'] == '1'
    assert two['model_id'] == one['model_id'] and two['protocol_id'] == one['protocol_id']
    for key in ('fit_images', 'fit_pixels', 'test_images', 'test_pixels', 'ts_method', 'converged'):
        assert two[key] == one[key], key
    numeric = [k for k in one if k in ('T', 'mIoU', 'aAcc') or k.startswith(('ECE', 'post_', 'cwCE', 'MCE', 'NLL'))]
    assert len(numeric) > 100
    for key in numeric:
        assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-6, abs=1e-9), key
    # the same table under another protocol is refused with a message, and nothing is written
    before = single.read_bytes()
    proc = run_tool(study_tool_command(*_args(models, single)[:-2], '--ts-method', 'grid-ece'))
    assert proc.returncode == 1 and 'another protocol' in proc.stderr
    assert single.read_bytes() == before


def test_a_failing_model_gives_exit_status_1_and_a_failure_row(models, tmp_path):
    out = tmp_path / 'broken.csv'
    proc = run_tool(study_tool_command('--models', f"{models['config']}:{models['broken']}", '--out', str(out),
                                       '--log-every', '0'))
    assert proc.returncode == 1
    assert 'FAILED' in proc.stdout and 'load-and-fit-pass' in proc.stdout
    (failure,) = read_table(str(tmp_path / 'broken.failures.csv'))
    assert failure['checkpoint'] == models['broken']
    assert not out.exists()


def test_bad_options_are_refused_with_a_message():
    proc = run_tool(study_tool_command('--models', 'a.py:b.pth', '--out', 'x.csv', '--fit-fraction', '1.5'))
    assert proc.returncode == 2 and 'fit_fraction must lie in (0, 1)' in proc.stderr


def test_robustness_rows_are_the_same_with_one_and_two_processes(models, tmp_path):
    rows = []
    for nproc in (1, 2):
        out = tmp_path / f'shift{nproc}.csv'
        proc = run_tool(study_tool_command(*_args(models, out, '--corruptions', 'fog', 'gaussian_noise',
                                                  '--corruption-severity', '2'), nproc=nproc))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        rows += read_table(str(out))
    one, two = rows
    assert one['shift_corruptions'] == two['shift_corruptions'] == 'fog+gaussian_noise'
    shift = [k for k in one if 'shift_' in k and k not in ('shift_corruptions', 'shift_seconds')] + ['mIoU_drop']
    assert len(shift) > 30
    for key in shift:
        assert float(two[key]) == pytest.approx(float(one[key]), rel=1e-6, abs=1e-9), key
    proc = run_tool(study_tool_command('--models', 'a.py:b.pth', '--out', 'x.csv', '--corruptions', 'smoke'))
    assert proc.returncode == 2 and 'unknown corruption' in proc.stderr
