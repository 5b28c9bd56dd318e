"""The demo calibration study's extra training runs: small models that differ in loss, decode-head width and
training length, trained on the generated demo data so that the study has 20+ models (Kendall tau over fewer
models is mostly noise). ``tools/run_demo_study.py`` is the command line."""
from __future__ import annotations

import glob
import os.path as osp
import time
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ['COMPARE_WORK_DIR', 'DEMO_CONFIG', 'EXTRA_RUNS', 'MIN_MODELS', 'demo_recipes', 'train_compare_runs',
           'train_extra_runs']

DEMO_CONFIG = 'fcn_r18-d16_{}_1xb8-600it_demo-voc12aug-96x96.py'
#: where ``tools/compare_methods.py`` trains the 12 demo recipes, and the voc study trains the missing ones
COMPARE_WORK_DIR = 'work_dirs/compare'
#: (run name, config, decode-head channels, training iterations); the compare runs have 128 channels, 600 its
EXTRA_RUNS: Tuple[Tuple[str, str, int, int], ...] = (
    ('ce-c32-200it', 'configs/baseline/' + DEMO_CONFIG.format('ce'), 32, 200),
    ('ce-c256-300it', 'configs/baseline/' + DEMO_CONFIG.format('ce'), 256, 300),
    ('focal-c64-100it', 'configs/focal/' + DEMO_CONFIG.format('focal'), 64, 100),
    ('ls-c64-300it', 'configs/label_smoothing/' + DEMO_CONFIG.format('ls'), 64, 300),
    ('mdca-c32-100it', 'configs/mdca/' + DEMO_CONFIG.format('mdca'), 32, 100),
    ('mbls-c256-200it', 'configs/mbls/' + DEMO_CONFIG.format('mbls'), 256, 200),
)
#: fewer models than this make Kendall tau mostly noise
MIN_MODELS = 20


def demo_recipes(repo_root: str) -> List[str]:
    """The demo's training recipes: every ``configs/<method>/`` :data:`DEMO_CONFIG` except the post-hoc ones
    (``configs/posthoc/`` evaluates a trained CE model with a fitted calibrator), sorted by path; what
    ``tools/compare_methods.py`` trains into ``work_dirs/compare``."""
    configs = glob.glob(osp.join(repo_root, 'configs', '*', DEMO_CONFIG.format('*')))
    return sorted(c for c in configs if osp.basename(osp.dirname(c)) != 'posthoc')


def train_extra_runs(*, data_root: str, work_dir: str, repo_root: str, max_iters: Optional[int] = None,
                     train_options: Sequence[str] = (), skip_train: bool = False,
                     log: Callable[[str], None] = print) -> List[str]:
    """Train the :data:`EXTRA_RUNS` whose final checkpoint is missing into ``work_dir/<run name>`` (half-way and
    final checkpoints kept); returns every run's work dir.

    Args:
        data_root: the generated demo data (``calibseg.datasets.demo``).
        work_dir: parent folder of the runs.
        repo_root: folder holding ``configs/``.
        max_iters: train every run for this many iterations instead (quick checks).
        train_options: more ``--cfg-options`` of every training.
        skip_train: train nothing; return the work dirs.
    """
    from calibseg.apis import train
    from calibseg.apis.experiment import demo_data_options

    dirs = []
    for name, config, channels, iters in EXTRA_RUNS:
        iters = max_iters or iters
        run_dir = osp.join(work_dir, name)
        dirs.append(run_dir)
        if skip_train or osp.isfile(osp.join(run_dir, f'iter_{iters}.pth')):
            log(f'[demo-study] {name}: {"skipped" if skip_train else "finished earlier"}')
            continue
        options = demo_data_options(data_root, iters) + [
            f'default_hooks.checkpoint.interval={max(1, iters // 2)}',
            f'model.decode_head.channels={channels}', *train_options]
        start = time.time()
        train(osp.join(repo_root, config), work_dir=run_dir, cfg_options=options, quiet=True)
        log(f'[demo-study] {name}: trained {iters} iterations in {time.time() - start:.0f} s')
    return dirs


def train_compare_runs(*, data_root: str, work_dir: str, repo_root: str, configs: Optional[Sequence[str]] = None,
                       reuse: bool = True, skip_train: bool = False, quiet: bool = True, tag: str = 'demo-study',
                       log: Callable[[str], None] = print) -> List[str]:
    """Train the demo recipes into ``work_dir/<config name>`` on the demo data at ``data_root`` (each config's own
    schedule: 600 iterations, half-way checkpoint); returns every run's work dir, in the order of ``configs``.

    ``tools/compare_methods.py`` (which then tests them) and the voc demo study train through here.

    Args:
        configs: the recipes (default: :func:`demo_recipes` of ``repo_root``).
        reuse: leave a run whose final checkpoint exists as it is (else train every run again).
        skip_train: train nothing; return the work dirs.
        quiet: keep mmengine's logs out of the console (they stay in each run's log file).
        tag: the prefix of the progress lines (``[tag] <run>: ...``).
    """
    from calibseg.apis import train
    from calibseg.apis.experiment import demo_data_options, run_finished, run_name

    dirs = []
    for config in demo_recipes(repo_root) if configs is None else configs:
        run_dir = osp.join(work_dir, run_name(config))
        dirs.append(run_dir)
        if skip_train or (reuse and run_finished(config, run_dir)):
            log(f'[{tag}] {run_name(config)}: {"skipped" if skip_train else "finished earlier"}')
            continue
        start = time.time()
        train(config, work_dir=run_dir, cfg_options=demo_data_options(data_root, config=config), quiet=quiet)
        log(f'[{tag}] {run_name(config)}: trained in {time.time() - start:.0f} s')
    return dirs
