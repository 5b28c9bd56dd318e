"""Cross-process helpers on plain ``torch.distributed``: rank and world size, sums, agreement on failures.

Every helper is a no-op (or the identity) in a single process, so library code can call them unconditionally.
They use the default process group that mmengine's launcher (or ``torch.distributed.init_process_group``)
set up; with the NCCL backend, tensors travel through the current CUDA device.

This module imports nothing but PyTorch.

Example (one process):
    >>> import torch
    >>> from calibseg.utils.distributed import dist_info, sum_across_ranks
    >>> dist_info()
    (0, 1)
    >>> sum_across_ranks(torch.tensor([1.0, 2.0], dtype=torch.float64))
    tensor([1., 2.], dtype=torch.float64)
"""
from typing import Any, Optional, Tuple

import torch
import torch.distributed as dist

__all__ = ['StageError', 'agree', 'broadcast', 'dist_info', 'sum_across_ranks']


def dist_info() -> Tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _backend_device() -> Optional[torch.device]:
    """The device collectives need tensors on (CUDA for NCCL), or ``None`` when any device will do."""
    if dist.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return None


def sum_across_ranks(vector: torch.Tensor) -> torch.Tensor:
    """Sum ``vector`` over all ranks (all-reduce); a new tensor on ``vector``'s device, ``vector`` untouched.

    In a single process ``vector`` itself is returned. Use float64 for counts and sums that must be exact.
    """
    _, world = dist_info()
    if world == 1:
        return vector
    device = _backend_device()
    summed = vector.detach().clone() if device is None else vector.detach().to(device, copy=True)
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    return summed.to(vector.device)


class StageError(RuntimeError):
    """A stage failed on at least one process; raised on every process by :func:`agree`.

    Attributes:
        stage: the name of the stage that failed (e.g. ``'load-and-fit-pass'``).
    """

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def agree(error: Optional[BaseException], stage: str) -> None:
    """Collective check after a stage that runs independently on every process.

    Every process passes the exception its stage raised (or ``None``). If any process failed, every process raises
    :class:`StageError` with the messages of the failed ranks (``'rank r: Type: message'``; without the rank
    prefix in a single process), so that none waits forever in a later collective. Must be called by all ranks.

    >>> agree(None, 'fit')
    >>> agree(ValueError('bad'), 'fit')
    Traceback (most recent call last):
    ...
    calibseg.utils.distributed.StageError: ValueError: bad
    """
    rank, world = dist_info()
    mine = None if error is None else f'{type(error).__name__}: {error}'
    if world > 1:
        messages = [None] * world
        dist.all_gather_object(messages, mine)
    else:
        messages = [mine]
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        text = '; '.join(m if world == 1 else f'rank {r}: {m}' for r, m in failed)
        raise StageError(stage, text) from error


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled through ``broadcast_object_list``); ``obj`` in a single process.

    Must be called by all ranks; only rank 0's argument matters.
    """
    _, world = dist_info()
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
