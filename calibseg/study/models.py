"""Which models a calibration study measures: config + checkpoint pairs, from work directories or lists.

A study's table tells models apart by :func:`~calibseg.study.identity.model_id` (the checkpoint's bytes and the
config parts that the measurement reads), so moving a work directory or testing a model again does not make a study
measure it again.
"""
from __future__ import annotations

import glob
import os.path as osp
import re
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

__all__ = ['ModelSpec', 'CHECKPOINT_PATTERN', 'work_dir_config', 'work_dir_checkpoints', 'parse_model_pair',
           'read_model_list', 'discover_models', 'checkpoint_iteration']

#: mmengine's checkpoint names: ``iter_<n>.pth`` / ``epoch_<n>.pth``
CHECKPOINT_PATTERN = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


@dataclass(frozen=True)
class ModelSpec:
    """One model of the study: a config and a checkpoint; ``group`` names its run (work dir or config).

    Example:
        >>> ModelSpec('wd/fcn.py', 'wd/iter_4.pth', 'wd').name
        'wd@iter_4'
    """

    config: str
    checkpoint: str
    group: str

    @property
    def name(self) -> str:
        return f'{self.group}@{osp.splitext(osp.basename(self.checkpoint))[0]}'


def work_dir_config(work_dir: str) -> str:
    """The config that mmengine dumped into ``work_dir`` (the one ``.py`` file at its top level, or the one named
    like the directory)."""
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    if len(configs) == 1:
        return configs[0]
    preferred = osp.join(work_dir, osp.basename(osp.normpath(work_dir)) + '.py')
    if preferred in configs:
        return preferred
    if not configs:
        raise FileNotFoundError(f'no config (*.py) in work dir {work_dir}')
    raise ValueError(f'several configs in work dir {work_dir}: {[osp.basename(c) for c in configs]}; name the '
                     'model with --models CONFIG:CHECKPOINT instead')


def work_dir_checkpoints(work_dir: str, *, all_checkpoints: bool) -> List[str]:
    """``iter_*.pth`` / ``epoch_*.pth`` of ``work_dir`` ordered by training length: all of them, or the longest."""
    found = []
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        match = CHECKPOINT_PATTERN.match(osp.basename(path))
        if match:
            found.append((match.group(1), int(match.group(2)), path))
    found.sort()
    paths = [p for _, _, p in found]
    return paths if all_checkpoints else paths[-1:]


def checkpoint_iteration(checkpoint: str) -> Optional[int]:
    """The training length in a checkpoint's mmengine name (``iter_300.pth`` -> 300), else ``None``.

    Example:
        >>> checkpoint_iteration('runs/a/iter_300.pth'), checkpoint_iteration('best.pth')
        (300, None)
    """
    match = CHECKPOINT_PATTERN.match(osp.basename(checkpoint))
    return int(match.group(2)) if match else None


def parse_model_pair(text: str) -> Tuple[str, str]:
    """``CONFIG.py:CHECKPOINT`` (split after the first ``.py:``) into its two paths.

    Example:
        >>> parse_model_pair('a/b.py:c/d:e.pth')
        ('a/b.py', 'c/d:e.pth')
    """
    head, sep, tail = text.partition('.py:')
    if not sep or not tail:
        raise ValueError(f'model entries must be CONFIG.py:CHECKPOINT, got {text!r}')
    return head + '.py', tail


def read_model_list(path: str) -> List[Tuple[str, str]]:
    """Pairs from a text/CSV file: one ``CONFIG CHECKPOINT`` (or ``CONFIG,CHECKPOINT`` or ``CONFIG.py:CKPT``) a
    line; blank lines, ``#`` comments and a ``config,checkpoint`` header are skipped."""
    pairs = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split('#', 1)[0].strip()
            if not line or line.replace(' ', '').lower() == 'config,checkpoint':
                continue
            parts = [p for p in re.split(r'[,\s]+', line) if p]
            if len(parts) == 1:
                pairs.append(parse_model_pair(parts[0]))
            elif len(parts) == 2:
                pairs.append((parts[0], parts[1]))
            else:
                raise ValueError(f'{path}:{number}: expected CONFIG CHECKPOINT, got {line!r}')
    return pairs


def discover_models(*, models: Sequence[str] = (), model_list: Optional[str] = None, work_dirs: Sequence[str] = (),
                    all_checkpoints: bool = False) -> List[ModelSpec]:
    """Every model named, in order, without duplicates (same config and checkpoint files).

    Args:
        models: ``CONFIG.py:CHECKPOINT`` entries.
        model_list: a file read by :func:`read_model_list`.
        work_dirs: globs of mmengine work directories: the config dumped there and its checkpoints.
        all_checkpoints: every checkpoint of a work dir is a model (else its longest-trained one).

    A work directory without a config still yields its checkpoints, with ``<the problem>`` as config, so that the
    study reports them as failed instead of forgetting them. Globs and work dirs that match nothing warn.
    """
    specs: List[ModelSpec] = []
    pairs = [parse_model_pair(m) for m in models]
    if model_list:
        pairs += read_model_list(model_list)
    for config, ckpt in pairs:
        specs.append(ModelSpec(config, ckpt, osp.splitext(osp.basename(config))[0]))
    for pattern in work_dirs:
        dirs = sorted(d for d in glob.glob(pattern) if osp.isdir(d))
        if not dirs:
            warnings.warn(f'no work directory matches {pattern!r}', stacklevel=2)
        for work_dir in dirs:
            ckpts = work_dir_checkpoints(work_dir, all_checkpoints=all_checkpoints)
            if not ckpts:
                warnings.warn(f'no iter_*.pth / epoch_*.pth in {work_dir}; skipped', stacklevel=2)
                continue
            try:
                config = work_dir_config(work_dir)
            except (FileNotFoundError, ValueError) as err:
                config = f'<{err}>'
            group = osp.basename(osp.normpath(work_dir))
            specs.extend(ModelSpec(config, c, group) for c in ckpts)
    seen, unique = set(), []
    for spec in specs:
        key = (osp.realpath(spec.config), osp.realpath(spec.checkpoint))
        if key not in seen:
            seen.add(key)
            unique.append(spec)
    return unique

