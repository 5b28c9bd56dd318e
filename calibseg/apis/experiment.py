"""Train-and-evaluate helpers behind ``tools/demo.py``, ``tools/compare_methods.py`` and
``tools/compare_saliency.py``.

Training and testing run in this process through :mod:`calibseg.apis.runs` (mmengine's Runner, one fresh
set of mmengine singletons per run); testing evaluates the run's own newest checkpoint and returns the metrics
dict. Results tables are Markdown, written between marker comments so a script can refresh them.
"""
from __future__ import annotations

import glob
import os
import os.path as osp
import re
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULTS_START = '<!-- calibseg:results:start -->'
RESULTS_END = '<!-- calibseg:results:end -->'
# the demo's figures are bit-identical from run to run on one kind of machine with these settings
DEMO_THREADS = 2
DETERMINISTIC_OPTIONS = ('randomness.seed=0', 'randomness.deterministic=True')

# (result key, row title, format): accuracy first, then calibration (percent) and the proper scores
DEFAULT_ROWS: Tuple[Tuple[str, str, str], ...] = (
    ('mIoU', 'mIoU (%)', '{:.2f}'),
    ('aAcc', 'pixel acc. (%)', '{:.2f}'),
    ('ECE', 'ECE_15 (%)', '{:.2f}'),
    ('ECE_em_15', 'ECE_em_15 (%)', '{:.2f}'),
    ('cwCE_15', 'cwCE_15 (%)', '{:.3f}'),
    ('MCE_15', 'MCE_15 (%)', '{:.2f}'),
    ('OE_15', 'OE_15 (%)', '{:.2f}'),
    ('NLL', 'NLL', '{:.4f}'),
    ('Brier', 'Brier', '{:.4f}'),
    ('gamma_mean', 'mean learned γ (γ-Net)', '{:.2f}'),
)

__all__ = ['run_name', 'method_name', 'demo_data_options', 'ensure_demo_data', 'reproducible', 'train',
           'test_latest', 'latest_checkpoint', 'run_finished', 'markdown_table', 'write_marked_section',
           'training_log_mean', 'saliency_data_options', 'epoch_budget_options', 'aslp_alpha_statistics',
           'REPO_ROOT', 'DEFAULT_ROWS', 'DEMO_THREADS', 'DETERMINISTIC_OPTIONS']


def run_name(config: str) -> str:
    """Config file name without extension (mmseg's default work-dir name)."""
    return osp.splitext(osp.basename(config))[0]


def method_name(config: str) -> str:
    """The method field of a config name that follows mmseg's grammar (``{model}_{backbone}_{method}_...``)."""
    parts = run_name(config).split('_')
    return parts[2] if len(parts) > 2 else run_name(config)


def demo_data_options(data_root: str, max_iters: Optional[int] = None, *, config: Optional[str] = None,
                      default_root: str = 'data/demo') -> List[str]:
    """``--cfg-options`` pointing a demo config's datasets at ``data_root`` (optionally a shorter schedule).

    With ``config``, every dataset of the config whose ``data_root`` lies under ``default_root`` (train, val,
    test, held-out splits, γ-Net's meta loader, ASLP's validation loader) is moved under ``data_root``; without
    it, the four VOC demo keys of the loss configs are set.
    """
    if config is not None:
        from mmengine.config import Config

        from ..utils.run_setup import iter_dataset_cfgs

        opts = []
        prefix = default_root.rstrip('/') + '/'
        for key, ds in iter_dataset_cfgs(Config.fromfile(config)):
            root = ds.get('data_root') or ''
            if root.startswith(prefix):
                opts.append(f'{key}.data_root={osp.join(data_root, root[len(prefix):])}')
    else:
        voc = osp.join(data_root, 'VOCdevkit', 'VOC2012')
        opts = [f'train_dataloader.dataset.datasets.0.data_root={voc}',
                f'train_dataloader.dataset.datasets.1.data_root={voc}',
                f'val_dataloader.dataset.data_root={voc}', f'test_dataloader.dataset.data_root={voc}']
    if max_iters:
        opts += [f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}',
                 f'default_hooks.checkpoint.interval={max_iters}', f'param_scheduler.0.end={max_iters}']
    return opts


def ensure_demo_data(data_root: str, *, datasets: Sequence[str] = ('voc', 'duts')) -> bool:
    """Generate the embedded demo data under ``data_root`` unless it is there; returns whether it generated."""
    from ..datasets.demo import generate_demo_data

    marker = {'voc': osp.join('VOCdevkit', 'VOC2012', 'ImageSets', 'Segmentation', 'val.txt'),
              'duts': osp.join('DUTS', 'DUTS-TE', 'DUTS-TE-Mask')}
    missing = [d for d in datasets if not osp.exists(osp.join(data_root, marker[d]))]
    for name in missing:
        generate_demo_data(data_root, only=name)
    return bool(missing)


def reproducible(threads: int = DEMO_THREADS) -> List[str]:
    """Fix this process's intra-op thread count and return the ``--cfg-options`` of deterministic algorithms.

    CPU kernels reduce in thread-count dependent order, so the same seed gives bit-identical numbers only for
    the same thread count (and the same kind of CPU, torch and data). torch's filling of uninitialised memory
    under deterministic algorithms is switched off: it changes no result and costs time on CPU.
    """
    import torch

    torch.set_num_threads(threads)
    deterministic = getattr(torch.utils, 'deterministic', None)
    if deterministic is not None and hasattr(deterministic, 'fill_uninitialized_memory'):
        deterministic.fill_uninitialized_memory = False
    return list(DETERMINISTIC_OPTIONS)


def train(config: str, work_dir: str, cfg_options: Sequence[str], *, quiet: bool = False) -> None:
    """Train ``config`` into ``work_dir`` in this process (:func:`calibseg.apis.train`); raises if it fails."""
    from .runs import train as train_run

    if not quiet:
        print(f'[calibseg] training {run_name(config)} -> {work_dir}', flush=True)
    train_run(config, work_dir=work_dir, cfg_options=list(cfg_options or ()), quiet=quiet)


def run_finished(config: str, work_dir: str) -> bool:
    """Whether ``work_dir`` holds the final checkpoint (``iter_<max_iters>.pth``) of the iteration-based
    ``config``."""
    from mmengine.config import Config

    return osp.isfile(osp.join(work_dir, f'iter_{Config.fromfile(config).train_cfg.max_iters}.pth'))


def latest_checkpoint(work_dir: str) -> str:
    """The newest checkpoint a run wrote into ``work_dir`` (refused if ``last_checkpoint`` points elsewhere)."""
    from ..compat import own_latest_checkpoint

    ckpt = own_latest_checkpoint(work_dir) if osp.isdir(work_dir) else None
    if ckpt is None:
        raise FileNotFoundError(f'no checkpoint in {work_dir}: train first')
    return ckpt


def test_latest(config: str, work_dir: str, cfg_options: Sequence[str], *, quiet: bool = False) -> Dict[str, float]:
    """Evaluate the newest checkpoint of ``work_dir`` (the run's own file, hence trusted); returns the metrics.

    ``quiet``: nothing on the console but warnings (the caller prints the table).
    """
    from .runs import test as test_run

    return test_run(config, latest_checkpoint(work_dir), work_dir=work_dir, cfg_options=list(cfg_options or ()),
                    quiet=quiet, show_results=False)


def saliency_data_options(data_root: str) -> List[str]:
    """``--cfg-options`` pointing every loader of the demo saliency configs at ``<data_root>/DUTS``."""
    duts = osp.join(data_root, 'DUTS')
    return [f'train_dataloader.dataset.dataset.data_root={duts}',
            f'aslp_val_dataloader.dataset.dataset.data_root={duts}',
            f'val_dataloader.dataset.data_root={duts}', f'test_dataloader.dataset.data_root={duts}']


def epoch_budget_options(config: str, max_epochs: Optional[int]) -> List[str]:
    """``--cfg-options`` of a shorter epoch-based schedule (ASLP then updates at least in the last epoch)."""
    if not max_epochs:
        return []
    from mmengine.config import Config

    opts = [f'train_cfg.max_epochs={max_epochs}', f'train_cfg.val_interval={max_epochs}',
            f'default_hooks.checkpoint.interval={max_epochs}', f'param_scheduler.0.end={max_epochs}']
    model = Config.fromfile(config).model
    if model.get('type') == 'ASLPEncoderDecoder' and model.get('update_from_epoch', 6) > max_epochs:
        opts.append(f'model.update_from_epoch={max_epochs}')
    return opts


def aslp_alpha_statistics(work_dir: str) -> Dict[str, float]:
    """Mean and median of the ASLP table in the run's own newest checkpoint (empty for other methods)."""
    from ..compat import load_trusted_checkpoint, own_latest_checkpoint
    from ..engine.hooks.aslp_hook import alpha_summary

    ckpt = own_latest_checkpoint(work_dir) if osp.isdir(work_dir) else None
    alpha = load_trusted_checkpoint(ckpt, map_location='cpu')['state_dict'].get('aslp_alpha') if ckpt else None
    if alpha is None or alpha.numel() == 0:
        return {}
    summary = alpha_summary(alpha)
    return dict(alpha_mean=summary['mean'], alpha_q50=summary['q50'])


def training_log_mean(work_dir: str, key: str, *, last_fraction: float = 0.1) -> Optional[float]:
    """Mean of a logged training scalar over the last ``last_fraction`` of the logged iterations.

    Reads every ``<work_dir>/<timestamp>/vis_data/scalars.json`` (a resumed run has several; a later run's value
    for the same step wins). Returns ``None`` when no record holds ``key``.
    """
    import json

    by_step: Dict[int, float] = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if key in record and 'step' in record and 'lr' in record:  # training records carry the lr
                    by_step[int(record['step'])] = float(record[key])
    if not by_step:
        return None
    steps = sorted(by_step)
    tail = steps[-max(1, int(round(len(steps) * last_fraction))):]
    return sum(by_step[s] for s in tail) / len(tail)


def markdown_table(results: Dict[str, Dict[str, float]], rows: Sequence[Tuple[str, str, str]] = DEFAULT_ROWS,
                   *, highlight: Optional[str] = None) -> str:
    """Methods as columns, metrics as rows (``-`` where a run lacks a key, no row where every run lacks it);
    ``highlight`` a column in bold."""
    names = list(results)
    head = [f'**{n}**' if n == highlight else n for n in names]
    lines = ['| metric | ' + ' | '.join(head) + ' |', '|---|' + '---:|' * len(names)]
    for key, title, fmt in rows:
        if all(results[n].get(key) is None for n in names):
            continue
        cells = ['-' if results[n].get(key) is None else fmt.format(float(results[n][key])) for n in names]
        lines.append(f'| {title} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_marked_section(path: str, text: str) -> None:
    """Replace what lies between the results markers of ``path`` with ``text`` (append the markers if absent).

    The file is replaced atomically (a temporary file in the same folder, then a rename).
    """
    content = open(path).read() if osp.isfile(path) else ''
    block = f'{RESULTS_START}\n{text.rstrip()}\n{RESULTS_END}'
    if RESULTS_START in content and RESULTS_END in content:
        pattern = re.compile(re.escape(RESULTS_START) + '.*?' + re.escape(RESULTS_END), re.S)
        content = pattern.sub(lambda _: block, content, count=1)
    else:
        content = content.rstrip() + '\n\n' + block + '\n'
    folder = osp.dirname(osp.abspath(path))
    mode = os.stat(path).st_mode & 0o777 if osp.exists(path) else 0o644
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + osp.basename(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
