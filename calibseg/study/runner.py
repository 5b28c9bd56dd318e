"""Running a study: measure every model not yet in the table, one durable row per model, failures reported.

Resumable and safe: a row is appended (checksummed, flushed and fsynced; :mod:`calibseg.study.table`) as soon as a
model is measured; models whose ``model_id`` is already in the table are skipped, and a row cut by a crash is not
counted, so its model is measured again; a model that fails is recorded in ``<out stem>.failures.csv`` (and
retried by the next run) while the others proceed. A table measured under another protocol is refused. With pyarrow
installed, ``<out stem>.parquet`` is rewritten from the CSV after each row.

Columns (one row per model; calibration errors, AUROC, AURC, Acc, mIoU, aAcc and HCS in percent):

* identity: ``model_id``, ``name``, ``method`` (the method field of the config name), ``loss``, ``iteration``,
  ``max_iters``, ``decode_channels``, ``backbone``, ``num_classes``, ``config``, ``checkpoint``,
  ``checkpoint_bytes``;
* protocol: ``protocol_id``, ``fit_split``, ``test_split``, ``ts_method``, ``fit_images``, ``fit_pixels``,
  ``test_images``, ``test_pixels``, ``T``, ``fit_nll_pre``, ``fit_nll_post``, ``ts_passes``, ``converged``,
  ``T_at_bound``, ``world_size``, ``device``, ``started_at``, ``finished_at``, ``seconds``;
* accuracy: ``mIoU``, ``aAcc`` (mmseg's ``IoUMetric`` arithmetic);
* pre-TS: every key of :func:`~calibseg.functional.calibration.calibration_metrics` and the harmonic calibration
  score ``HCS = 2 a (1 - e) / (a + 1 - e)`` (pixel accuracy ``a``, top-label ECE-15 ``e``, as fractions);
* post-TS: the same keys prefixed ``post_``;
* shift (only with ``protocol.corruptions``; :mod:`calibseg.study.measure` step 4): ``shift_corruptions`` (names
  joined by ``+``), ``shift_severity``, ``shift_seconds``, ``shift_<key>`` and ``post_shift_<key>`` (means over the
  corruptions, TS with the clean-fitted ``T``) for the :data:`~calibseg.study.measure.SHIFT_METRICS` keys, and
  ``mIoU_drop``;
* ``row_sha256``: the row's checksum.

Tables written before a column existed stay readable (missing cells read as empty); a protocol without
corruptions has the id it had before robustness existed, so such tables resume. A table measured without
corruptions refuses a run with them (and the reverse): its rows would lack the robustness columns.
"""
from __future__ import annotations

import datetime
import json
import os
import os.path as osp
import time
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from calibseg.utils.distributed import StageError, broadcast, dist_info

from .identity import legacy_model_id, model_id
from .measure import measure
from .models import ModelSpec
from .protocol import StudyProtocol
from .table import append_row, read_table, write_parquet

__all__ = ['plan', 'run_study', 'failures_path', 'init_study']

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def failures_path(out: str) -> str:
    """``<out stem>.failures.csv``: one row per failed measurement."""
    return osp.splitext(out)[0] + '.failures.csv'


def init_study(*, launcher: str = 'none', device: Optional[str] = None) -> torch.device:
    """Register calibseg's modules, start the process group under ``launcher='pytorch'`` (torchrun) and pick the
    device (``device``, else this process's CUDA device when there is one, else the CPU)."""
    from mmengine.config import Config

    import calibseg  # noqa: F401  (registers HeldOutSplit, the losses and the metrics)
    from calibseg.compat import setup_distributed

    setup_distributed(Config(dict()), launcher)
    if device:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)) if launcher == 'pytorch' else 0)
    return torch.device('cpu')


def plan(specs: Sequence[ModelSpec], out: str, protocol: StudyProtocol) -> List[Tuple[ModelSpec, Optional[str], str]]:
    """``(spec, model_id or None, 'todo' | 'skip' | error message)`` for every model (call on rank 0)."""
    rows = read_table(out)
    others = sorted({r.get('protocol_id', '') for r in rows} - {protocol.id})
    if others:
        hint = ''
        if protocol.corruptions and others == [protocol.without_shift().id]:
            hint = (' (the table was measured without corruptions: measure the robustness study into a new table, '
                    'every model again)')
        elif not protocol.corruptions and any(r.get('shift_corruptions') for r in rows):
            hint = f" (the table was measured under corruptions {rows[0].get('shift_corruptions')!r}: pass them)"
        raise ValueError(f'{out} holds rows of another protocol ({others}, this run: {protocol.id}, '
                         f'{json.dumps(protocol.as_dict(), default=str)}){hint}: write this study to another '
                         'table')
    done = {r.get('model_id') for r in rows}
    result = []
    for spec in specs:
        try:
            mid = model_id(spec, protocol)
            if mid not in done:  # a row of an earlier calibseg, whose ids hashed the config's text
                legacy = legacy_model_id(spec)
                mid = legacy if legacy in done else mid
        except (OSError, ValueError) as err:
            result.append((spec, None, f'{type(err).__name__}: {err}'))
            continue
        result.append((spec, mid, 'skip' if mid in done else 'todo'))
    return result


def _report_failure(out: str, spec: ModelSpec, mid: Optional[str], stage: str, message: str, log: Log) -> None:
    log(f'[study] FAILED {spec.name} ({stage}): {message}')
    append_row(failures_path(out), {'time': _now(), 'model_id': mid or '', 'name': spec.name, 'config': spec.config,
                                    'checkpoint': spec.checkpoint, 'stage': stage, 'error': message})


def run_study(specs: Sequence[ModelSpec], *, out: str, protocol: StudyProtocol, device: torch.device,
              weights_only: bool = False, num_workers: Optional[int] = None, log_every: int = 100,
              debug: bool = False, log: Log = _print) -> Tuple[int, int]:
    """Measure every model of ``specs`` missing from the table ``out``; returns ``(measured, failed)``.

    Collective under torchrun: every process calls it with the same arguments; rank 0 plans, writes and logs.

    Example (the tiny checkpoints of the tests; ``python tools/calibration_study.py`` is the command line)::

        specs = discover_models(work_dirs=['work_dirs/compare/*'], all_checkpoints=True)
        run_study(specs, out='study.csv', protocol=StudyProtocol(), device=torch.device('cpu'))
    """
    from calibseg.apis.experiment import method_name

    rank, world = dist_info()
    work = broadcast(plan(specs, out, protocol) if rank == 0 else None)
    todo = sum(status == 'todo' for _, _, status in work)
    if rank == 0:
        shift = (f', corruptions {"+".join(protocol.corruptions)} at severity {protocol.corruption_severity}'
                 if protocol.corruptions else '')
        log(f'[study] {len(work)} models, {todo} to measure, {sum(s == "skip" for _, _, s in work)} already in '
            f'{out}; protocol {protocol.id} (ts_method {protocol.ts_method}{shift}); {world} process(es) on '
            f'{device}')
    failures = measured = position = 0
    for spec, mid, status in work:
        if status == 'skip':
            if rank == 0:
                log(f'[study] skip {spec.name}: already measured ({mid})')
            continue
        if status != 'todo':
            failures += 1
            if rank == 0:
                _report_failure(out, spec, mid, 'discover', status, log)
            continue
        position += 1
        if rank == 0:
            log(f'[study] ({position}/{todo}) {spec.name}: {spec.checkpoint}')
        started, clock = _now(), time.time()
        try:
            facts, metrics = measure(spec, protocol, device=device, weights_only=weights_only,
                                     num_workers=num_workers, log_every=log_every, debug=debug)
        except StageError as err:
            failures += 1
            if rank == 0:
                _report_failure(out, spec, mid, err.stage, str(err), log)
            continue
        if rank != 0:
            continue
        row = {'model_id': mid, 'name': spec.name, 'method': method_name(spec.config)}
        row.update({k: facts.pop(k) for k in ('loss', 'iteration', 'max_iters', 'decode_channels', 'backbone',
                                              'num_classes')})
        row.update(config=spec.config, checkpoint=spec.checkpoint, checkpoint_bytes=osp.getsize(spec.checkpoint),
                   protocol_id=protocol.id)
        row.update(facts)
        row.update(world_size=world, device=str(device), started_at=started, finished_at=_now(),
                   seconds=round(time.time() - clock, 3))
        row.update(metrics)
        append_row(out, row)
        write_parquet(out)
        measured += 1
        note = ('' if row['converged'] else '  (temperature fit NOT converged)') + (
            '  (T at the end of the search range)' if row['T_at_bound'] else '')
        log(f"[study]   T={row['T']:.4f}{note}  mIoU {row['mIoU']:.2f}  ECE_15 {row['ECE_15']:.3f} -> "
            f"{row['post_ECE_15']:.3f}  NLL {row['NLL']:.4f} -> {row['post_NLL']:.4f}  ({row['test_images']} test "
            f"images, {row['test_pixels']} pixels, {row['seconds']:.1f} s)")
        if 'mIoU_drop' in row:
            log(f"[study]   under {len(protocol.corruptions)} corruption(s) at severity {protocol.corruption_severity}"
                f": mIoU {row['shift_mIoU']:.2f} (drop {row['mIoU_drop']:.2f})  ECE_15 {row['shift_ECE_15']:.3f} -> "
                f"{row['post_shift_ECE_15']:.3f}  ({row['shift_seconds']:.1f} s)")
    if rank == 0:
        log(f'[study] done: {measured} measured, {failures} failed'
            + (f' (see {failures_path(out)})' if failures else '') + f'; table: {out}')
    return measured, failures
