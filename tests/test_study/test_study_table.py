"""calibseg.study.table: durable checksummed rows; cut or damaged rows are never read as measurements."""
from __future__ import annotations

import csv
import os

import pytest

from calibseg.study.table import CHECKSUM_COLUMN, append_row, atomic_write_text, read_table, row_checksum


def _quiet_read(path):
    with pytest.warns(RuntimeWarning) as record:
        rows = read_table(str(path))
    return rows, [str(w.message) for w in record]


def test_rows_round_trip_exactly_and_the_header_grows(tmp_path):
    path = str(tmp_path / 't.csv')
    append_row(path, {'a': 1, 'b': 0.1})
    append_row(path, {'a': 2, 'b': float('nan')})
    append_row(path, {'a': 3, 'c': 'x,y\nz'})  # a new column: rewritten with the union of columns
    rows = read_table(path)
    assert rows == [{'a': '1', 'b': '0.1', 'c': ''}, {'a': '2', 'b': 'nan', 'c': ''},
                    {'a': '3', 'b': '', 'c': 'x,y\nz'}]
    append_row(path, {'a': 5, 'b': 1e-300, 'c': None})
    assert float(read_table(path)[-1]['b']) == 1e-300  # repr: exact round trip
    with open(path, newline='') as f:
        records = list(csv.reader(f))
    assert records[0] == ['a', 'b', 'c', CHECKSUM_COLUMN]
    for record in records[1:]:  # every row carries the checksum of its other cells
        assert record[-1] == row_checksum(record[:-1])
    with pytest.raises(ValueError, match=CHECKSUM_COLUMN):
        append_row(path, {'a': 6, CHECKSUM_COLUMN: 'x'})


def test_appending_does_not_rewrite_earlier_bytes(tmp_path):
    path = tmp_path / 't.csv'
    append_row(str(path), {'a': 1, 'b': 2.5})
    before = path.read_bytes()
    append_row(str(path), {'a': 2, 'b': 3.5})
    assert path.read_bytes().startswith(before)


def test_a_row_cut_inside_its_last_field_is_not_accepted(tmp_path):
    """Issue 17: ``post_HCS=6.875...`` cut to ``6.8`` was read (and rewritten) as a complete row."""
    path = tmp_path / 'study.csv'
    append_row(str(path), {'model_id': 'm1', 'post_HCS': 6.875123})
    append_row(str(path), {'model_id': 'm2', 'post_HCS': 6.875123})
    data = path.read_bytes()
    cut = data[:data.rindex(b'6.875123') + 3]  # '...,m2,6.8' (the checksum cell is lost as well)
    path.write_bytes(cut)
    rows, messages = _quiet_read(path)
    assert [r['model_id'] for r in rows] == ['m1']
    assert 'incomplete' in messages[0]
    # the same cut in a table without the checksum column (older tables): the newline rule drops it
    legacy = tmp_path / 'legacy.csv'
    legacy.write_bytes(b'model_id,post_HCS\nm1,6.875123\nm2,6.8')
    rows, _ = _quiet_read(legacy)
    assert rows == [{'model_id': 'm1', 'post_HCS': '6.875123'}]


def test_every_cut_of_the_last_row_is_dropped_and_repaired_by_the_next_append(tmp_path):
    path = tmp_path / 'study.csv'
    append_row(str(path), {'model_id': 'm1', 'x': 1.25, 'msg': 'two\nlines'})
    append_row(str(path), {'model_id': 'm2', 'x': 6.875123, 'msg': 'quoted, "text"\nend'})
    data = path.read_bytes()
    start = data.index(b'm2')
    for end in range(start, len(data)):
        path.write_bytes(data[:end])
        if end == start:  # the file ends with the first row's newline: nothing is cut
            assert [r['model_id'] for r in read_table(str(path))] == ['m1']
            continue
        rows, messages = _quiet_read(path)
        assert [r['model_id'] for r in rows] == ['m1'], end
        assert messages, end
    for d in tmp_path.glob('study.csv.damaged-*'):
        d.unlink()
    path.write_bytes(data[:start + 7])  # cut inside the quoted field
    with pytest.warns(RuntimeWarning, match='damaged file is kept as'):
        append_row(str(path), {'model_id': 'm3', 'x': 2.0, 'msg': ''})
    assert [r['model_id'] for r in read_table(str(path))] == ['m1', 'm3']
    (damaged,) = tmp_path.glob('study.csv.damaged-*')
    assert damaged.read_bytes() == data[:start + 7]  # the user's bytes are kept
    assert path.read_bytes().endswith(b'\n')


def test_a_damaged_row_fails_its_checksum_and_is_dropped(tmp_path):
    path = tmp_path / 'study.csv'
    for i, value in enumerate((0.5, 0.25, 0.125)):
        append_row(str(path), {'model_id': f'm{i}', 'ECE_15': value})
    data = path.read_bytes()
    path.write_bytes(data.replace(b'0.25,', b'0.35,'))  # a flipped digit in the middle row
    rows, messages = _quiet_read(path)
    assert [r['model_id'] for r in rows] == ['m0', 'm2']
    assert 'row 3 fails its checksum' in messages[0]
    with pytest.warns(RuntimeWarning):
        append_row(str(path), {'model_id': 'm1', 'ECE_15': 0.25})  # measured again
    assert [(r['model_id'], r['ECE_15']) for r in read_table(str(path))] == [
        ('m0', '0.5'), ('m2', '0.125'), ('m1', '0.25')]


def test_a_table_without_checksums_gains_them_on_the_next_append(tmp_path):
    path = tmp_path / 'old.csv'
    path.write_text('model_id,T\nm0,1.5\nm1,0.75\n')
    assert read_table(str(path)) == [{'model_id': 'm0', 'T': '1.5'}, {'model_id': 'm1', 'T': '0.75'}]
    append_row(str(path), {'model_id': 'm2', 'T': 2.0})
    assert path.read_text().splitlines()[0] == f'model_id,T,{CHECKSUM_COLUMN}'
    assert [r['T'] for r in read_table(str(path))] == ['1.5', '0.75', '2.0']
    assert not list(tmp_path.glob('*.damaged-*'))  # nothing was lost


def test_a_cut_header_and_missing_files_read_as_empty(tmp_path):
    assert read_table(str(tmp_path / 'absent.csv')) == []
    path = tmp_path / 't.csv'
    path.write_text('model_id,T')
    rows, _ = _quiet_read(path)
    assert rows == []
    with pytest.warns(RuntimeWarning):
        append_row(str(path), {'model_id': 'm0', 'T': 1.0})
    assert read_table(str(path)) == [{'model_id': 'm0', 'T': '1.0'}]


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'f.txt'
    path.write_text('old')
    atomic_write_text(str(path), 'new\n')
    assert path.read_text() == 'new\n'
    assert os.listdir(tmp_path) == ['f.txt']
