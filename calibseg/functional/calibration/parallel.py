"""Chunk-parallel accumulation on CPU threads (an implementation detail of the calibration statistics).

The per-chunk work is many short, memory-bound tensor operations and serial ``bincount`` calls, which scale
poorly with intra-op threads; independent chunks on single-threaded workers scale with the cores instead.
"""
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import torch
from torch import Tensor

__all__ = ['ChunkRunner']


class ChunkRunner:
    """Runs the per-chunk accumulation, serially or on a pool of single-threaded workers.

    Each worker keeps its own accumulator and workspace (thread-local), so chunks are independent; the
    accumulators are summed at the end. Workers set their own intra-op thread count to 1 (a per-thread
    OpenMP setting); the caller's count is restored on exit.
    """

    def __init__(self, workers: int, device: torch.device) -> None:
        self.workers = workers if device.type == 'cpu' else 1
        self._local = threading.local()
        self._accs = []
        self._lock = threading.Lock()
        self._futures = []
        self._pool = None
        self._threads = torch.get_num_threads()

    def __enter__(self) -> 'ChunkRunner':
        if self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix='calibseg-stats',
                                            initializer=torch.set_num_threads, initargs=(1,))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            for future in self._futures:  # after an error: drop the chunks not started yet
                future.cancel()
            self._pool.shutdown(wait=True)
            torch.set_num_threads(self._threads)  # the workers changed the default for new threads

    def _state(self):
        local = self._local
        if not hasattr(local, 'workspace'):
            local.workspace = {}
            local.acc = [None]
            with self._lock:
                self._accs.append(local.acc)
        return local

    def _call(self, fn, *args) -> None:
        local = self._state()
        local.acc[0] = fn(*args, local.acc[0], local.workspace)

    def submit(self, fn, *args) -> None:
        """Run ``fn(*args, acc, workspace) -> acc`` on a chunk."""
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
        """Wait for every chunk and return the sum of the accumulators (``None`` if no chunk produced one)."""
        self.barrier()
        accs = [a[0] for a in self._accs if a[0] is not None]
        if not accs:
            return None
        out = accs[0]
        for a in accs[1:]:
            out += a.to(out.device)
        return out
