"""Chunk-parallel accumulation on CPU threads (an implementation detail of the calibration statistics).

The per-chunk work is many short, memory-bound tensor operations and serial ``bincount`` calls, which scale
poorly with intra-op threads; independent chunks on single-threaded workers scale with the cores instead.

Everything that would otherwise be allocated per call is kept between calls, because on CPU PyTorch allocates
straight from ``malloc`` and a fresh multi-megabyte buffer costs its page faults on every sample (measured: a
``(21, 32768)`` float64 product into a new tensor took 20x longer than into a reused one): the worker threads
(one process-wide pool), each thread's scratch buffers (:func:`thread_workspace`, thread-local, reused by every
chunk that thread runs) and the accumulators (a free list). :func:`release_buffers` frees the scratch buffers and
accumulators (e.g. at the end of an evaluation).
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor

__all__ = ['ChunkRunner', 'thread_workspace', 'release_buffers', 'one_thread']

_LOCK = threading.Lock()
_POOL: Optional[ThreadPoolExecutor] = None
_POOL_WORKERS = 0
_LOCAL = threading.local()
_WORKSPACES: List[Dict[str, Tensor]] = []  # every thread's workspace, for release_buffers
_FREE_ACCS: Dict[Tuple[int, torch.dtype, str], List[Tensor]] = {}


def thread_workspace() -> Dict[str, Tensor]:
    """The calling thread's dict of reusable scratch buffers (kept across calls)."""
    ws = getattr(_LOCAL, 'workspace', None)
    if ws is None:
        ws = _LOCAL.workspace = {}
        with _LOCK:
            _WORKSPACES.append(ws)
    return ws


def release_buffers() -> None:
    """Free every thread's scratch buffers and the spare accumulators (call when no update is running)."""
    with _LOCK:
        for ws in _WORKSPACES:
            ws.clear()
        _FREE_ACCS.clear()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one intra-op thread (restored after): for many small tensor operations, waking a
    second thread for each costs more than the operation, badly so when other processes keep the cores busy."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _shared_pool(workers: int) -> ThreadPoolExecutor:
    """The process-wide pool of ``workers`` single-threaded workers (rebuilt when ``workers`` changes)."""
    global _POOL, _POOL_WORKERS
    with _LOCK:
        if _POOL is None or _POOL_WORKERS != workers:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(workers, thread_name_prefix='calibseg-stats',
                                       initializer=torch.set_num_threads, initargs=(1,))
            _POOL_WORKERS = workers
        return _POOL


class ChunkRunner:
    """Runs the per-chunk accumulation, serially or on the shared pool of single-threaded workers.

    ``init_acc(acc)`` fills a fresh accumulator; each thread taking part in a run gets its own (from a free list,
    so nothing is allocated in the steady state) and its own workspace; :meth:`total` merges them with
    ``merge(into, other)`` (into ``first_acc`` when given: one thread adds straight into it). Workers run with one
    intra-op thread; the caller's thread count is restored on exit.
    """

    def __init__(self, workers: int, device: torch.device, acc_size: int, init_acc: Callable[[Tensor], None],
                 merge: Callable[[Tensor, Tensor], None], first_acc: Optional[Tensor] = None) -> None:
        self.workers = workers if device.type == 'cpu' else 1
        self._first = first_acc  # taken as it is (not re-initialised) by the first thread, e.g. the caller's state
        self._key = (acc_size, torch.float64, str(device))
        self._device = device
        self._init_acc = init_acc
        self._merge = merge
        self._accs: Dict[int, Tensor] = {}
        self._lock = threading.Lock()
        self._futures = []
        self._pool = None
        self._threads = torch.get_num_threads()

    def __enter__(self) -> 'ChunkRunner':
        if self.workers > 1:
            self._pool = _shared_pool(self.workers)
        elif self._device.type == 'cpu' and self._threads > 1:
            # serially, with one intra-op thread too: the chunks' operations are too small to share, and
            # waking a second thread per operation costs more than the operation when the cores are busy
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            for future in self._futures:  # after an error: drop the chunks not started yet
                future.cancel()
            for future in self._futures:
                if not future.cancelled():
                    future.exception()  # wait for the running ones
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)  # new workers change the default for new threads
        with _LOCK:
            _FREE_ACCS.setdefault(self._key, []).extend(a for a in self._accs.values() if a is not self._first)
        self._accs = {}

    def _acc(self) -> Tensor:
        ident = threading.get_ident()
        acc = self._accs.get(ident)
        if acc is None and self._first is not None:
            with self._lock:
                if not any(a is self._first for a in self._accs.values()):
                    acc = self._accs[ident] = self._first
        if acc is None:
            with _LOCK:
                free = _FREE_ACCS.get(self._key)
                acc = free.pop() if free else None
            if acc is None:
                acc = torch.empty(self._key[0], dtype=torch.float64, device=self._device)
            self._init_acc(acc)
            with self._lock:
                self._accs[ident] = acc
        return acc

    def _call(self, fn, *args) -> None:
        fn(*args, self._acc(), thread_workspace())

    def submit(self, fn, *args) -> None:
        """Run ``fn(*args, acc, workspace)`` on a chunk (it adds the chunk into ``acc`` in place)."""
        if self._pool is None:
            self._call(fn, *args)
        else:
            self._futures.append(self._pool.submit(self._call, fn, *args))

    def throttle(self) -> None:
        """Bound the chunks in flight (and so the memory) to a few per worker."""
        if len(self._futures) >= 4 * self.workers:
            self.barrier()

    def barrier(self) -> None:
        """Wait for every submitted chunk (re-raising the first error)."""
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()

    def total(self) -> Optional[Tensor]:
        """Wait for every chunk and return the merged accumulator (``None`` if no chunk ran).

        The tensor is the runner's own buffer: use it before the runner exits.
        """
        self.barrier()
        accs = list(self._accs.values())
        if not accs:
            return None
        accs.sort(key=lambda a: a is not self._first)  # into the first accumulator when it was used
        out = accs[0]
        for a in accs[1:]:
            self._merge(out, a)
        return out
