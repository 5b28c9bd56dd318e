"""What training and testing runs share (:mod:`calibseg.apis.runs`, ``tools/train.py``, ``tools/test.py``):
config loading with mmseg's CLI conventions, the compatibility set-up of :mod:`calibseg.compat`, and checks that
fail before a run starts."""
from __future__ import annotations

import copy
import os
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from mmengine.config import Config

from ..compat import resolve_resume, setup_distributed

__all__ = ['load_run_config', 'check_data_paths', 'iter_dataset_cfgs', 'TEST_LOADERS']

# the dataloaders a test-only run reads (Runner.test() builds nothing else)
TEST_LOADERS = ('test_dataloader',)


def load_run_config(config: Union[str, Config], *, work_dir: Optional[str] = None,
                    cfg_options: Optional[Dict[str, Any]] = None, launcher: str = 'none',
                    resume: bool = False, loaders: Optional[Sequence[str]] = None) -> Config:
    """Load ``config`` as mmseg's tools do and prepare it for this stack.

    ``config`` is a config file or an already loaded :class:`~mmengine.config.Config` (copied, not modified).
    work_dir priority: ``work_dir`` argument > the config's ``work_dir`` > ``work_dirs/<config name>``.
    Also initialises torch.distributed for ``launcher='pytorch'`` (see :func:`calibseg.compat.setup_distributed`),
    resolves ``resume`` to the work directory's newest checkpoint, and checks that the dataset paths of
    ``loaders`` exist (names of dataloader keys, e.g. :data:`TEST_LOADERS`; ``None``: every dataloader).
    """
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file not found: {config}')
        cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        if not cfg.filename:
            raise ValueError('a config without a file name needs a work_dir')
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(cfg.filename))[0])
    check_data_paths(cfg, loaders=loaders)
    setup_distributed(cfg, launcher)
    resolve_resume(cfg, resume)
    return cfg


def iter_dataset_cfgs(cfg: Config) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Yield ``(config key, dataset cfg)`` for every leaf dataset of the config's dataloaders.

    Dataloaders: every top-level ``*_dataloader`` (train, val, test, ``aslp_val_dataloader``...) and a model's
    ``model.meta.dataloader`` (γ-Net's meta split). Keys use dots (``train_dataloader.dataset.datasets.0``), as
    ``--cfg-options`` does.
    """
    def leaves(key: str, ds: Any) -> Iterator[Tuple[str, Dict[str, Any]]]:
        if not isinstance(ds, dict):
            return
        if 'datasets' in ds:  # ConcatDataset
            for i, child in enumerate(ds['datasets']):
                yield from leaves(f'{key}.datasets.{i}', child)
        elif 'dataset' in ds:  # RepeatDataset and similar wrappers
            yield from leaves(f'{key}.dataset', ds['dataset'])
        else:
            yield key, ds

    loaders = [(key, cfg.get(key)) for key in cfg.keys() if key.endswith('_dataloader')]
    meta = (cfg.get('model') or {}).get('meta')
    if isinstance(meta, dict):
        loaders.append(('model.meta.dataloader', meta.get('dataloader')))
    for split, loader in loaders:
        if isinstance(loader, dict) and loader.get('dataset') is not None:
            yield from leaves(f'{split}.dataset', loader['dataset'])


def check_data_paths(cfg: Config, *, loaders: Optional[Sequence[str]] = None) -> None:
    """Fail before any model is built if a dataset's ``data_root``, ``ann_file`` or data folder is missing.

    ``loaders``: the dataloader keys to check (``'test_dataloader'``, ``'model.meta.dataloader'``...); ``None``
    checks every dataloader of the config (:func:`iter_dataset_cfgs`).

    Raises:
        FileNotFoundError: naming the config key and the missing path (and the generator command for the
            embedded demo data).
    """
    problems: List[str] = []
    for key, ds in iter_dataset_cfgs(cfg):
        if loaders is not None and not any(key.startswith(loader + '.') for loader in loaders):
            continue
        root = ds.get('data_root') or ''
        if root and not osp.isdir(root):
            problems.append(f'{key}.data_root: {root}')
            continue
        ann = ds.get('ann_file') or ''
        if ann:
            path = ann if osp.isabs(ann) else osp.join(root, ann)
            if not osp.isfile(path):
                problems.append(f'{key}.ann_file: {path}')
        for name, sub in (ds.get('data_prefix') or {}).items():
            path = sub if osp.isabs(sub) else osp.join(root, sub)
            if sub and not osp.isdir(path):
                problems.append(f'{key}.data_prefix.{name}: {path}')
    if problems:
        hint = ''
        if any('data/demo' in p for p in problems):
            hint = ('\nThe embedded demo data is generated by '
                    '`python tools/dataset_converters/generate_demo_data.py --out data/demo`.')
        raise FileNotFoundError('missing dataset paths (cwd: ' + os.getcwd() + '):\n  '
                                + '\n  '.join(dict.fromkeys(problems)) + hint)
