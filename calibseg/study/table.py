"""The study's resumable result table: a CSV file grown one durable, checksummed row at a time.

Every row ends with a ``row_sha256`` cell: the first 16 hex digits of the SHA-256 of the row's other cells written
as one CSV line (header order, ``\\n`` terminated). A row counts only if it is newline-terminated and its checksum
matches, so a row cut by a crash, a full disk or a killed process (even inside its last field, where ``6.875`` would
still parse as ``6.8``) is never read as a measurement: :func:`read_table` drops it with a warning, and the next
:func:`append_row` rewrites the table without it (atomically, keeping a copy of the damaged file beside it).
Tables written before the checksum existed are read with the newline rule alone and gain checksums when next
rewritten.

Values are written with ``repr`` for floats (the shortest text that reads back to the same double, ``nan`` and
``inf`` included) and empty for ``None``.
"""
from __future__ import annotations

import csv
import datetime
import hashlib
import io
import os
import os.path as osp
import shutil
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..utils.files import atomic_write_text

__all__ = ['CHECKSUM_COLUMN', 'read_table', 'append_row', 'row_checksum', 'write_parquet', 'atomic_write_text']

#: name of the checksum column (always the last one)
CHECKSUM_COLUMN = 'row_sha256'


def _format(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _csv_line(cells: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator='\n').writerow([_format(v) for v in cells])
    return buffer.getvalue()


def row_checksum(cells: Sequence[str]) -> str:
    """First 16 hex digits of the SHA-256 of ``cells`` written as one CSV line.

    Example:
        >>> row_checksum(['1', '0.5'])
        '84c0585249519ee9'
    """
    return hashlib.sha256(_csv_line(cells).encode('utf-8')).hexdigest()[:16]


def _scan(path: str) -> Tuple[Optional[List[str]], List[List[str]], List[str]]:
    """``(header, complete rows, problems)`` of the table at ``path``; ``header`` is ``None`` when there is none."""
    if not osp.isfile(path) or osp.getsize(path) == 0:
        return None, [], []
    with open(path, 'rb') as f:
        data = f.read()
    text = data.decode('utf-8', errors='replace')
    problems: List[str] = []
    records: List[List[str]] = []
    try:
        for record in csv.reader(io.StringIO(text, newline=''), strict=True):
            records.append(record)
    except csv.Error as err:
        problems.append(f'unreadable CSV after row {max(len(records) - 1, 0)} ({err}); the rest is dropped')
    if records and not data.endswith(b'\n') and not problems:
        records.pop()  # the last line has no newline: cut while being written
        problems.append('the last row is incomplete (no newline at its end)')
    if not records:
        return None, [], problems
    header, rows = records[0], []
    checked = bool(header) and header[-1] == CHECKSUM_COLUMN
    for number, row in enumerate(records[1:], 2):
        if len(row) != len(header):
            problems.append(f'row {number} has {len(row)} cells, the header {len(header)}')
        elif checked and row[-1] != row_checksum(row[:-1]):
            problems.append(f'row {number} fails its checksum (damaged or cut)')
        else:
            rows.append(row)
    return header, rows, problems


def _warn(path: str, problems: Sequence[str]) -> None:
    for problem in problems:
        warnings.warn(f'{path}: {problem}; it is not counted as measured', RuntimeWarning, stacklevel=3)


def read_table(path: str) -> List[Dict[str, str]]:
    """The complete rows of the table at ``path`` as ``{column: text}`` (``[]`` if absent), without the checksum
    column; incomplete or damaged rows are dropped with a ``RuntimeWarning``."""
    header, rows, problems = _scan(path)
    _warn(path, problems)
    if header is None:
        return []
    columns = header[:-1] if header[-1] == CHECKSUM_COLUMN else header
    return [dict(zip(columns, row)) for row in rows]


def append_row(path: str, row: Dict[str, Any]) -> None:
    """Append ``row`` (with its checksum) to the table at ``path`` and make it durable before returning.

    The first row writes the header. When ``row`` has columns the header lacks, when the table holds damaged rows
    or an incomplete last line, or when it predates the checksum column, the whole table is rewritten atomically
    (union of the columns, complete rows only, missing values empty); a table that loses rows is first copied to
    ``<path>.damaged-<UTC time>``. Otherwise the line is appended, flushed and fsynced.
    """
    if CHECKSUM_COLUMN in row:
        raise ValueError(f'{CHECKSUM_COLUMN!r} is the table\'s own column; a row cannot set it')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    header, rows, problems = _scan(path)
    _warn(path, problems)
    if header is None:
        if problems:
            _keep_damaged(path)
        columns = list(row)
        atomic_write_text(path, _csv_line([*columns, CHECKSUM_COLUMN]) + _line(columns, row))
        return
    checked = header[-1] == CHECKSUM_COLUMN
    columns = header[:-1] if checked else list(header)
    new = [k for k in row if k not in columns]
    if new or problems or not checked:
        if problems:
            _keep_damaged(path)
        old = [dict(zip(columns, r)) for r in rows]
        columns += new
        text = _csv_line([*columns, CHECKSUM_COLUMN]) + ''.join(_line(columns, r) for r in old)
        atomic_write_text(path, text + _line(columns, row))
        return
    with open(path, 'a', newline='', encoding='utf-8') as f:
        f.write(_line(columns, row))
        f.flush()
        os.fsync(f.fileno())


def _line(columns: Sequence[str], row: Dict[str, Any]) -> str:
    cells = [_format(row.get(c)) for c in columns]
    return _csv_line([*cells, row_checksum(cells)])


def _keep_damaged(path: str) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')
    copy = f'{path}.damaged-{stamp}'
    shutil.copyfile(path, copy)
    warnings.warn(f'{path} is rewritten without its damaged rows; the damaged file is kept as {copy}',
                  RuntimeWarning, stacklevel=3)


def write_parquet(csv_path: str) -> Optional[str]:
    """Rewrite ``<stem>.parquet`` from the CSV (atomically) when pyarrow is importable; returns its path or
    ``None``."""
    try:
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq
    except ImportError:
        return None
    out = osp.splitext(csv_path)[0] + '.parquet'
    tmp = f'{out}.tmp{os.getpid()}'
    pq.write_table(pa_csv.read_csv(csv_path), tmp)
    os.replace(tmp, out)
    return out
