"""Compatibility between mmengine 0.10.x and current PyTorch, in one place.

Two problems of the released OpenMMLab stack are solved here, without touching mmengine's files:

1. **Checkpoints under torch >= 2.6.** ``torch.load`` defaults to ``weights_only=True`` there, and mmengine
   calls it without the argument, so a checkpoint that mmengine's own Runner saved (it pickles the message
   hub's ``HistoryBuffer``, numpy scalars, ...) no longer loads. Allow-listing those classes would need
   ``builtins.getattr`` and private numpy names, which defeats the check, and
   ``torch.serialization.add_safe_globals`` does not exist before torch 2.4. calibseg therefore keeps
   mmengine's default (safe) loader for plain paths and adds an explicit *trusted* path:

   * the scheme ``trusted://`` is registered in mmengine's ``CheckpointLoader``: ``load_from='trusted://x.pth'``
     loads ``x.pth`` with full unpickling (only do this for files you or your colleagues wrote);
   * :func:`resolve_resume` lets ``tools/train.py --resume`` resume from the newest checkpoint of the run's own
     work directory, which the same Runner wrote, through that scheme. Only a file inside that directory with
     mmengine's checkpoint name (``iter_N.pth``, ``epoch_N.pth``) is trusted (:func:`own_latest_checkpoint`):
     a ``last_checkpoint`` that points elsewhere (a copied or shared work dir) is refused;
   * ``tools/test.py`` treats the checkpoint named on its command line as trusted (the user named it), unless
     ``--weights-only`` is given.

2. **``launcher='pytorch'`` on CPU.** mmengine's launcher calls ``torch.cuda.set_device`` unconditionally, which
   fails on CPU-only builds. :func:`setup_distributed` initialises the process group itself (gloo on CPU, nccl on
   GPU) from torchrun's environment before the Runner is built, so that mmengine finds it initialised and skips
   its own launcher code, and it sets a model wrapper without ``device_ids`` on CPU. CPU configs must also use
   ``BN`` instead of ``SyncBN`` (torch's SyncBatchNorm has no CPU kernel); see ``configs/_base_/models``.

Importing this module registers the ``trusted://`` scheme and does nothing else.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from typing import Any, Optional

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

TRUSTED_PREFIX = 'trusted://'
# the names mmengine's CheckpointHook gives the checkpoints of a run (default filename_tmpl)
CHECKPOINT_NAME = re.compile(r'(iter|epoch)_\d+\.pth')

__all__ = [
    'TRUSTED_PREFIX', 'CHECKPOINT_NAME', 'UntrustedCheckpointError', 'load_trusted_checkpoint', 'trusted',
    'own_latest_checkpoint', 'resolve_resume', 'setup_distributed'
]


class UntrustedCheckpointError(ValueError):
    """A checkpoint that calibseg would have to unpickle fully but cannot vouch for."""


def trusted(path: str) -> str:
    """Return ``path`` marked as a trusted checkpoint (``trusted://path``); idempotent."""
    return path if path.startswith(TRUSTED_PREFIX) else TRUSTED_PREFIX + path


def load_trusted_checkpoint(filename: str, map_location: Any = None) -> Any:
    """Load a checkpoint with full unpickling (``weights_only=False``).

    Registered in mmengine's ``CheckpointLoader`` under the ``trusted://`` prefix. Unpickling runs arbitrary
    code stored in the file: use it only for checkpoints from a source you trust.

    Args:
        filename: a local path, optionally prefixed with ``trusted://``.
        map_location: as in :func:`torch.load`.
    """
    path = osp.expanduser(filename[len(TRUSTED_PREFIX):] if filename.startswith(TRUSTED_PREFIX)
                          else filename)
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except TypeError:  # torch < 1.13 has no weights_only argument and always unpickles fully
        return torch.load(path, map_location=map_location)


def load_from_trusted(filename: str, map_location: Any = None) -> Any:
    """:func:`load_trusted_checkpoint` under the name mmengine's loader log expects (``Loads checkpoint by trusted
    backend``)."""
    return load_trusted_checkpoint(filename, map_location)


CheckpointLoader.register_scheme(prefixes=TRUSTED_PREFIX, loader=load_from_trusted, force=True)


def own_latest_checkpoint(work_dir: str) -> Optional[str]:
    """The newest checkpoint a Runner wrote into ``work_dir``, checked to be that run's own file.

    mmengine's ``find_latest_checkpoint`` returns whatever path ``<work_dir>/last_checkpoint`` names. This returns
    it only when it is a regular file directly inside ``work_dir`` (after resolving symbolic links) named as
    mmengine's CheckpointHook names checkpoints (``iter_N.pth`` / ``epoch_N.pth``); a relative entry is read
    relative to the current directory, as mmengine does.

    Returns:
        The checkpoint's path, or ``None`` when ``work_dir`` or its ``last_checkpoint`` file does not exist.

    Raises:
        UntrustedCheckpointError: ``last_checkpoint`` names a file outside ``work_dir``, a link leading out of
            it, or a file with another name (the message names the file).
        FileNotFoundError: the named checkpoint does not exist.

    Example:
        >>> import os, tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     own_latest_checkpoint(run) is None
        True
    """
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        named = f.read().strip()
    if not named:
        raise UntrustedCheckpointError(f'{record} is empty: it should name the newest checkpoint of the run')
    if not CHECKPOINT_NAME.fullmatch(osp.basename(named)):
        raise UntrustedCheckpointError(
            f'refusing to resume from {named}: {record} names a file that is not one of mmengine\'s checkpoints '
            '(iter_N.pth / epoch_N.pth)' + _override_hint(named))
    real_dir = osp.realpath(work_dir)
    real_file = osp.realpath(named)
    if osp.dirname(real_file) != real_dir or osp.basename(real_file) != osp.basename(named):
        raise UntrustedCheckpointError(
            f'refusing to resume from {named}: {record} points outside the run\'s work directory {work_dir} '
            '(a copied or shared work dir?); only checkpoints the run wrote into its own work directory are '
            'loaded with full unpickling' + _override_hint(named))
    if not osp.isfile(real_file):
        raise FileNotFoundError(f'{record} names {named}, which does not exist')
    return named


def _override_hint(path: str) -> str:
    return (f'. If you trust that file, resume from it explicitly: --resume --cfg-options '
            f'load_from={TRUSTED_PREFIX}{path}')


def resolve_resume(cfg: Config, resume: bool) -> None:
    """Point ``cfg`` at the newest checkpoint of its own work directory, as a trusted file.

    mmengine's Runner would find the same file itself but load it with torch's safe loader, which rejects the
    objects the Runner itself saved. Only the run's own checkpoint is trusted (:func:`own_latest_checkpoint`). A
    checkpoint given explicitly through ``cfg.load_from`` is left as the user wrote it (prefix it with
    ``trusted://`` to trust it).

    Args:
        cfg: the run's config; ``cfg.work_dir`` must be set.
        resume: whether the user asked to resume.

    Raises:
        UntrustedCheckpointError: the work directory's ``last_checkpoint`` names a file outside it.
    """
    if not resume:
        return
    cfg.resume = True
    if cfg.get('load_from'):
        return
    latest = own_latest_checkpoint(cfg.work_dir)
    if latest is None:
        print_log(f'--resume: no checkpoint in {cfg.work_dir}, starting from scratch', logger='current')
        cfg.resume = False
        return
    cfg.load_from = trusted(latest)


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Prepare a distributed run that works on CPU (gloo) and GPU (nccl) alike.

    For ``launcher='pytorch'`` (torchrun) this initialises the default process group from ``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` before the Runner exists, so mmengine skips its
    launcher (which calls ``torch.cuda.set_device`` even on CPU). Without CUDA it also selects gloo and a
    ``MMDistributedDataParallel`` wrapper with ``device_ids=None`` (``device_ids=None`` is also added to a wrapper
    the config names).
    Other launchers (``slurm``, ``mpi``) are left to mmengine.

    Args:
        cfg: the run's config; ``cfg.launcher`` is set to ``launcher``.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    cfg.launcher = launcher
    if launcher != 'pytorch':
        return
    import torch.distributed as dist

    missing = [k for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f"launcher='pytorch' needs torchrun's environment variables; missing {missing}. "
                           'Start the run with tools/dist_train.sh or torchrun.')
    use_cuda = torch.cuda.is_available()
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}) or {})
    backend: Optional[str] = dist_cfg.pop('backend', None)
    if not use_cuda:
        backend = 'gloo'
        if cfg.get('model_wrapper_cfg') is None:
            cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)
        else:  # a named wrapper (e.g. TrainStepDelegatingDDP): mmengine would pass device_ids=[LOCAL_RANK]
            cfg.model_wrapper_cfg.setdefault('device_ids', None)
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(int(os.environ['LOCAL_RANK']))
        dist.init_process_group(backend=backend or 'nccl', **dist_cfg)
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = dist.get_backend()
