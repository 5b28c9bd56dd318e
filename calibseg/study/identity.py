"""Which rows of a study table are the same model: :func:`model_id`.

A model's row depends on its weights, on how the config builds the network and on the data the protocol measures it
on; nothing else of the config (``work_dir``, ``load_from``, hooks, logging, the training schedule) changes a number
of the row. mmengine's Runner dumps the config into the work dir on every run, a test run too, and a test dump
differs from the training one in exactly those other parts (``load_from`` set, ``train_dataloader`` and
``val_dataloader`` ``None``), so an id over the config's text changed whenever a model was tested again (and a dump
read while being written hashed as an empty file). :func:`model_id` hashes the checkpoint's bytes and the parts that
matter, read the way :func:`~calibseg.study.measure.measure` reads them; :func:`legacy_model_id` is the text hash
that tables written before kept, so that :func:`~calibseg.study.runner.plan` still finds their rows.
"""
from __future__ import annotations

import hashlib
import json
import os.path as osp
from typing import Any, Optional

from ..utils.files import file_sha256
from .config import load_config, split_loaders
from .models import ModelSpec
from .protocol import StudyProtocol

__all__ = ['model_id', 'legacy_model_id', 'measured_config_parts']


def _without_scopes(value: Any) -> Any:
    """``value`` with every ``_scope_`` key dropped (mmengine's registry writes the default scope into the config
    dicts it builds, so a dump taken after building holds them and the config file does not)."""
    if isinstance(value, dict):
        return {k: _without_scopes(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return [_without_scopes(v) for v in value]
    return value


def measured_config_parts(spec: ModelSpec, protocol: Optional[StudyProtocol] = None) -> dict:
    """``{'model': ..., 'fit': ..., 'test': ...}``: the config's model and the two dataloaders that ``protocol``
    measures on, as plain dicts (``_scope_`` keys dropped), after ``protocol.cfg_options``.

    Raises:
        FileNotFoundError: the config file is missing.
        ValueError: the config is not valid Python or has no ``model`` (e.g. an empty or half-written dump), or
            lacks a dataloader the protocol needs (the ``KeyError`` of
            :func:`~calibseg.study.config.split_loaders`, re-raised).
    """
    protocol = StudyProtocol() if protocol is None else protocol
    try:
        cfg = load_config(spec, protocol.cfg_options)
    except SyntaxError as err:
        raise ValueError(f'config {spec.config} is not valid Python (a half-written file?): {err}') from None
    if not cfg.get('model'):
        raise ValueError(f'config {spec.config} defines no model (an empty or half-written file?)')
    try:
        loaders = split_loaders(cfg, protocol)
    except KeyError as err:
        raise ValueError(f'config {spec.config}: {err.args[0]}') from None
    parts = {'model': cfg.model.to_dict()}
    parts.update({part: dict(loader) for part, (loader, _) in loaders.items()})
    return _without_scopes(parts)


def model_id(spec: ModelSpec, protocol: Optional[StudyProtocol] = None) -> str:
    """``<16 hex of the checkpoint's SHA-256>-<8 hex of the SHA-256 of the measured config parts>``.

    The parts are :func:`measured_config_parts` (the model and the protocol's fit and test dataloaders; default
    protocol: :class:`~calibseg.study.protocol.StudyProtocol`'s defaults) as canonical JSON: the same id for the
    training and the test dumps of a run, and wherever the files lie.

    Raises:
        FileNotFoundError: the checkpoint or the config is missing.
        ValueError: see :func:`measured_config_parts`.
    """
    if not osp.isfile(spec.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {spec.checkpoint}')
    parts = measured_config_parts(spec, protocol)
    text = json.dumps(parts, sort_keys=True, separators=(',', ':'), default=repr)
    return f'{file_sha256(spec.checkpoint)[:16]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}'


def legacy_model_id(spec: ModelSpec) -> str:
    """The id of calibseg's earlier tables: the checkpoint's hash and the hash of the config file's text (only to
    recognise their rows: it changes whenever a run dumps the config again)."""
    return f'{file_sha256(spec.checkpoint)[:16]}-{file_sha256(spec.config)[:8]}'
