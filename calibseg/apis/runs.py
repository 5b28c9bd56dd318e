"""Train and test with mmengine's Runner in this process (what ``tools/train.py`` and ``tools/test.py`` run).

Several runs can follow each other in one process (a notebook, ``tools/demo.py``, a test): each run gets its own
experiment name, so mmengine's per-name singletons (logger, message hub, visualizer, default scope) are fresh for
every run instead of being shared with (and logging into the directory of) the previous one.
"""
from __future__ import annotations

import copy
import itertools
import os.path as osp
import time
from typing import Any, Dict, Optional, Sequence, Union

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from ..compat import trusted
from ..utils.run_setup import TEST_LOADERS, load_run_config
from .quiet import add_console_hooks, describe_log, filter_known_noise, quiet_runner_class

__all__ = ['train', 'test', 'build_runner', 'parse_cfg_options', 'test_only']

ConfigLike = Union[str, Config]
Options = Union[Dict[str, Any], Sequence[str], None]
_RUN_NUMBER = itertools.count(1)


def parse_cfg_options(options: Options) -> Dict[str, Any]:
    """``--cfg-options`` as a dict: a dict is returned as is, ``['a.b=1', 'c=[1,2]']`` is parsed as mmengine's
    command lines parse it.

    Example:
        >>> parse_cfg_options(['train_cfg.max_iters=4', 'model.data_preprocessor.size=(32,32)'])
        {'train_cfg.max_iters': 4, 'model.data_preprocessor.size': (32, 32)}
    """
    if not options:
        return {}
    if isinstance(options, dict):
        return dict(options)
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction, default={})
    return parser.parse_args(['--o', *options]).o


def build_runner(cfg: Config, *, quiet: bool = False, label: Optional[str] = None,
                 show_results: bool = True) -> Runner:
    """A Runner for ``cfg`` (prepared by :func:`calibseg.utils.run_setup.load_run_config`) that does not share
    mmengine's singletons with earlier runs of this process; ``quiet`` adds the console of :mod:`.quiet`."""
    cfg = _isolated(cfg)
    if quiet:
        filter_known_noise()  # the model's losses warn while the Runner builds them
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS

        runner_cls = RUNNERS.get(cfg.runner_type)
    else:
        runner_cls = Runner
    if quiet:
        runner_cls = quiet_runner_class(runner_cls)
    runner = runner_cls.from_cfg(cfg)
    if quiet:
        add_console_hooks(runner, label or _stem(cfg), show_results=show_results)
    return runner


def train(cfg: ConfigLike, *, work_dir: Optional[str] = None, cfg_options: Options = None, resume: bool = False,
          amp: bool = False, launcher: str = 'none', quiet: bool = False) -> Runner:
    """Train a segmentor with mmengine's Runner, as ``tools/train.py`` does, and return the Runner.

    Args:
        cfg: a config file or a loaded Config (not modified).
        work_dir: checkpoints and logs (default: the config's ``work_dir``, else ``work_dirs/<config name>``).
        cfg_options: overrides, a dict (``{'train_cfg.max_iters': 4}``) or ``['train_cfg.max_iters=4']``.
        resume: resume from the newest checkpoint of ``work_dir`` (only the run's own checkpoints are trusted,
            see :func:`calibseg.compat.own_latest_checkpoint`), or from ``load_from`` if the config sets one.
        amp: mixed precision (``AmpOptimWrapper``).
        launcher: ``'none'``, or ``'pytorch'`` under torchrun (gloo on CPU, nccl on GPU).
        quiet: one progress line and a short validation result on the console; mmengine's full log only in the
            run's log file.

    Example (a 4-iteration run on the demo data; the tests run it)::

        from calibseg.apis import train
        runner = train('configs/baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py',
                       work_dir='work_dirs/quick', cfg_options={'train_cfg.max_iters': 4}, quiet=True)
        runner.iter  # 4
    """
    if quiet:
        filter_known_noise()  # some of it is emitted while the config loads (mmseg:: bases)
    config = load_run_config(cfg, work_dir=work_dir, cfg_options=parse_cfg_options(cfg_options),
                             launcher=launcher, resume=resume)
    if amp:
        if config.optim_wrapper.type not in ('OptimWrapper', 'AmpOptimWrapper'):
            raise ValueError(f'amp needs optim_wrapper.type OptimWrapper, got {config.optim_wrapper.type}')
        config.optim_wrapper.type = 'AmpOptimWrapper'
        config.optim_wrapper.setdefault('loss_scale', 'dynamic')
    runner = build_runner(config, quiet=quiet)
    _announce(runner, 'training', quiet)
    runner.train()
    return runner


def test(cfg: ConfigLike, checkpoint: str, *, work_dir: Optional[str] = None, cfg_options: Options = None,
         weights_only: bool = False, launcher: str = 'none', quiet: bool = False,
         show_results: bool = True) -> Dict[str, float]:
    """Evaluate ``checkpoint`` on the config's test split with mmengine's Runner; returns the metrics.

    Only the test dataloader's paths must exist (a test-only run reads no training data). The checkpoint is
    loaded as a trusted file (full unpickling: you named it) unless ``weights_only``.

    Args:
        cfg: a config file or a loaded Config (not modified).
        checkpoint: the checkpoint file.
        work_dir, cfg_options, launcher, quiet: as in :func:`train`.
        weights_only: load with torch's safe loader (plain state dicts only).
        show_results: in quiet mode, print the test result (``False``: nothing but warnings).

    Example::

        metrics = test('configs/baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py',
                       'work_dirs/quick/iter_4.pth', quiet=True)
        metrics['mIoU'], metrics['ECE']
    """
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    if quiet:
        filter_known_noise()
    config = load_run_config(cfg, work_dir=work_dir, cfg_options=parse_cfg_options(cfg_options),
                             launcher=launcher, loaders=TEST_LOADERS)
    config.load_from = checkpoint if weights_only else trusted(checkpoint)
    config.resume = False
    test_only(config)
    runner = build_runner(config, quiet=quiet, show_results=show_results)
    _announce(runner, 'testing', quiet and show_results)
    return runner.test()


TRAINING_KEYS = ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler', 'val_dataloader', 'val_cfg',
                 'val_evaluator')


def test_only(cfg: Config) -> Config:
    """Drop the training and validation parts of ``cfg`` (in place) so that a Runner built from it can only test.

    mmengine builds the training loop, and with it the training dataset, as soon as anything asks for
    ``runner.iter`` or ``runner.epoch`` (hooks do, after a test epoch); without a training part they are 0.
    """
    for key in TRAINING_KEYS:
        cfg[key] = None
    return cfg


def _stem(cfg: Config) -> str:
    if cfg.filename:
        return osp.splitext(osp.basename(cfg.filename))[0]
    return osp.basename(osp.normpath(cfg.work_dir))


def _isolated(cfg: Config) -> Config:
    """A copy of ``cfg`` whose experiment and visualizer names are unique in this process.

    mmengine keys its logger, message hub and default scope by ``<experiment_name>_<timestamp>`` (one-second
    resolution), and mmseg's configs name the visualizer ``'visualizer'``: a second run in the same process would
    otherwise get the first run's visualizer (writing its scalars into the first run's log directory) and, within
    the same second, its logger and message hub. The run's log directory is ``<work_dir>/<timestamp>``, so a
    run that starts in the same second as an earlier one in the same work dir waits for the next second.
    """
    cfg = copy.deepcopy(cfg)
    number = next(_RUN_NUMBER)
    cfg.experiment_name = f'{cfg.get("experiment_name") or _stem(cfg)}-run{number}'
    if isinstance(cfg.get('visualizer'), dict):
        cfg.visualizer['name'] = f'{cfg.experiment_name}-visualizer'
    while osp.isdir(osp.join(cfg.work_dir, time.strftime('%Y%m%d_%H%M%S'))):
        time.sleep(0.2)
    return cfg


def _announce(runner: Runner, what: str, quiet: bool) -> None:
    if not quiet:
        return
    from mmengine.dist import is_main_process

    if is_main_process():
        print(f'[calibseg] {what} {_stem(runner.cfg)} in {runner.work_dir} (full log: {describe_log(runner)})',
              flush=True)
