"""Fault injection on the calibration study: a study killed while writing its table, resumed.

The table's last row is cut at every byte offset, a process is killed (SIGKILL) in the middle of appending, a
row is damaged in the middle of the table: in every case the cut or damaged row is not counted, the next run
measures that model again, and every row of the final table is complete and equal to an undisturbed measurement.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import warnings

import pytest
import torch
from study_testing import make_study_models

from calibseg.study import StudyProtocol, discover_models, read_table, run_study
from calibseg.study.table import _line

PROTOCOL = StudyProtocol(ts_method='nll')
VOLATILE = ('started_at', 'finished_at', 'seconds')


@pytest.fixture(scope='module')
def study(tiny_voc, tmp_path_factory):
    models = make_study_models(tmp_path_factory.mktemp('study_faults'), tiny_voc)
    specs = discover_models(work_dirs=[str(models['work_dir'])], all_checkpoints=True)
    out = models['root'] / 'clean.csv'
    assert run_study(specs, out=str(out), protocol=PROTOCOL, device=torch.device('cpu'), log_every=0,
                     log=lambda _: None) == (2, 0)
    return dict(specs=specs, clean=out.read_bytes(), rows=read_table(str(out)))


def _resume(study, path):
    log = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        result = run_study(study['specs'], out=str(path), protocol=PROTOCOL, device=torch.device('cpu'),
                           log_every=0, log=log.append)
    return result, log


def _same_measurements(rows, reference):
    assert len(rows) == len(reference)
    for row, ref in zip(rows, reference):
        assert {k: v for k, v in row.items() if k not in VOLATILE} == \
            {k: v for k, v in ref.items() if k not in VOLATILE}


def test_the_last_row_cut_at_any_byte_is_never_counted(study, tmp_path):
    data = study['clean']
    start = data.rindex(b'\n', 0, len(data) - 1) + 1  # the last row
    path = tmp_path / 'study.csv'
    last_id = study['rows'][-1]['model_id']
    for end in range(start, len(data) + 1):
        path.write_bytes(data[:end])
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            ids = [r['model_id'] for r in read_table(str(path))]
        assert ids == ([study['rows'][0]['model_id'], last_id] if end == len(data)
                       else [study['rows'][0]['model_id']]), end


@pytest.mark.parametrize('where', ['inside the last field', 'inside the checksum', 'before the newline'])
def test_a_study_cut_while_writing_remeasures_the_model(study, tmp_path, where):
    data = study['clean']
    cut = {'inside the last field': data.rindex(b',') - 3,  # post_HCS loses its last 3 digits
           'inside the checksum': len(data) - 6, 'before the newline': len(data) - 1}[where]
    path = tmp_path / 'study.csv'
    path.write_bytes(data[:cut])
    (measured, failed), log = _resume(study, path)
    assert (measured, failed) == (1, 0)
    assert any(line.startswith('[study] skip wd_tiny@iter_1') for line in log)
    assert any('wd_tiny@iter_2' in line and '(1/1)' in line for line in log)
    _same_measurements(read_table(str(path)), study['rows'])
    assert len(list(tmp_path.glob('study.csv.damaged-*'))) == 1  # the cut file is kept for the user


def test_a_process_killed_while_appending_leaves_a_row_that_is_measured_again(study, tmp_path):
    path = tmp_path / 'study.csv'
    data = study['clean']
    first_row_end = data.index(b'\n', data.index(b'\n') + 1) + 1
    path.write_bytes(data[:first_row_end])  # the first model is measured
    row = dict(study['rows'][1])
    line = _line(list(row), row)  # the line append_row would write for the second model
    child = (  # a writer killed (SIGKILL, no cleanup) after half of the line reached the disk
        'import os, signal, sys\n'
        "f = open(sys.argv[1], 'a')\n"
        'line = sys.argv[2]\n'
        'f.write(line[:len(line) // 2]); f.flush(); os.fsync(f.fileno())\n'
        'os.kill(os.getpid(), signal.SIGKILL)\n'
        'f.write(line[len(line) // 2:])\n')
    proc = subprocess.run([sys.executable, '-c', child, str(path), line], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(path.read_bytes()) > first_row_end  # half a row was written
    (measured, failed), _ = _resume(study, path)
    assert (measured, failed) == (1, 0)
    _same_measurements(read_table(str(path)), study['rows'])


def test_a_damaged_row_in_the_middle_is_measured_again(study, tmp_path):
    data = bytearray(study['clean'])
    value = study['rows'][0]['mIoU'].encode()
    position = data.index(b',' + value + b',') + len(value)  # the last digit of the first model's mIoU
    data[position] = ord('9') if data[position] != ord('9') else ord('8')
    path = tmp_path / 'study.csv'
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match='fails its checksum'):
        assert [r['name'] for r in read_table(str(path))] == ['wd_tiny@iter_2']
    (measured, failed), _ = _resume(study, path)
    assert (measured, failed) == (1, 0)
    rows = read_table(str(path))
    assert [r['name'] for r in rows] == ['wd_tiny@iter_2', 'wd_tiny@iter_1']
    _same_measurements(rows[::-1], study['rows'])
