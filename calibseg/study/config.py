"""A study's view of a model's config: loading it, the factors it names, and the fit / test data splits."""
from __future__ import annotations

import copy
import os.path as osp
from typing import Any, Dict, Optional, Tuple

from mmengine.config import Config

from .models import ModelSpec
from .protocol import StudyProtocol

__all__ = ['load_config', 'describe_config', 'split_loaders']


#: config key set by :func:`load_config` when the validation loader was taken from the test loader
VAL_FROM_TEST = '_calibseg_val_from_test'


def load_config(spec: ModelSpec, cfg_options: Optional[Dict[str, Any]] = None) -> Config:
    """The model's config with ``cfg_options`` merged in.

    A config whose ``val_dataloader`` is ``None`` while its ``test_dataloader`` is set is the dump that a test
    run (mmseg's ``tools/test.py``, ``calibseg.apis.test``) leaves in the work dir over the training one: its
    ``val_dataloader`` becomes a copy of the test loader (before ``cfg_options``), and :func:`split_loaders`
    names the test loader as the split one.
    """
    if not osp.isfile(spec.config):
        raise FileNotFoundError(f'config not found: {spec.config}')
    cfg = Config.fromfile(spec.config)
    if 'val_dataloader' in cfg and cfg.val_dataloader is None and cfg.get('test_dataloader'):
        cfg.val_dataloader = copy.deepcopy(cfg.test_dataloader)
        cfg[VAL_FROM_TEST] = True
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def describe_config(cfg: Config) -> Dict[str, Any]:
    """Identifying factors read from the config: ``loss`` (the decode head's loss types joined by ``+``),
    ``max_iters``, ``decode_channels``, ``backbone`` (type and depth), ``num_classes`` (empty where absent)."""
    model = cfg.get('model', {})
    head = model.get('decode_head', {})
    if isinstance(head, (list, tuple)):
        head = head[-1]
    losses = head.get('loss_decode', {})
    losses = losses if isinstance(losses, (list, tuple)) else [losses]
    backbone = model.get('backbone', {})
    depth = backbone.get('depth')
    return {
        'loss': '+'.join(str(loss.get('type', '')) for loss in losses),
        'max_iters': (cfg.get('train_cfg') or {}).get('max_iters', ''),
        'decode_channels': head.get('channels', ''),
        'backbone': f"{backbone.get('type', '')}{'-' + str(depth) if depth else ''}",
        'num_classes': head.get('num_classes', ''),
    }


def split_loaders(cfg: Config, protocol: StudyProtocol) -> Dict[str, Tuple[dict, str]]:
    """``{'fit': (dataloader cfg, description), 'test': (...)}``: two dataloaders of the config
    (``protocol.fit_split`` / ``test_split``), or the two complementary
    :class:`~calibseg.datasets.HeldOutSplit` parts of ``protocol.split_source`` (``held_out`` to fit, ``train`` to
    test), so that no image is used for both."""
    if protocol.fit_split:
        out = {}
        for part, key in (('fit', protocol.fit_split), ('test', protocol.test_split)):
            if not cfg.get(key):
                raise KeyError(f'the config has no {key!r} (the {part} split)')
            out[part] = (dict(cfg[key]), key)
        return out
    source = cfg.get(protocol.split_source)
    if not source:
        raise KeyError(f'the config has no {protocol.split_source!r} to split')
    name = protocol.split_source
    if name == 'val_dataloader' and cfg.get(VAL_FROM_TEST):
        name = 'test_dataloader'  # see load_config
    out = {}
    for part, held in (('fit', 'held_out'), ('test', 'train')):
        loader = dict(source)
        loader['dataset'] = dict(type='HeldOutSplit', dataset=source['dataset'], part=held,
                                 held_out=protocol.fit_fraction, seed=protocol.split_seed)
        out[part] = (loader, f'{name}:HeldOutSplit(part={held},held_out={protocol.fit_fraction},'
                             f'seed={protocol.split_seed})')
    return out
