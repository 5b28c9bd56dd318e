"""Train-and-evaluate helpers behind ``tools/demo.py`` and ``tools/compare_methods.py``.

Training runs ``tools/train.py`` in a child process (a clean mmengine state per run, its progress log streamed to
the terminal); testing runs ``Runner.test()`` in this process on the run's newest checkpoint and returns the
metrics dict. Results tables are Markdown, written between marker comments so a script can refresh them.
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import re
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULTS_START = '<!-- calibseg:results:start -->'
RESULTS_END = '<!-- calibseg:results:end -->'

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

__all__ = ['run_name', 'method_name', 'demo_data_options', 'train', 'test_latest', 'markdown_table',
           'write_marked_section', 'training_log_mean', 'REPO_ROOT', 'DEFAULT_ROWS']


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


def train(config: str, work_dir: str, cfg_options: Sequence[str]) -> None:
    """Train ``config`` with ``tools/train.py`` in a child process (raises if it fails)."""
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir]
    if cfg_options:
        cmd += ['--cfg-options', *cfg_options]
    print(f'[calibseg] training {run_name(config)} -> {work_dir}', flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))


def test_latest(config: str, work_dir: str, cfg_options: Sequence[str]) -> Dict[str, float]:
    """Evaluate the newest checkpoint of ``work_dir`` (written by our own training run, hence trusted)."""
    from mmengine.config import DictAction
    from mmengine.runner import Runner, find_latest_checkpoint

    from ..compat import trusted
    from ..utils.run_setup import load_run_config

    ckpt = find_latest_checkpoint(work_dir) if osp.isdir(work_dir) else None
    if ckpt is None:
        raise FileNotFoundError(f'no checkpoint in {work_dir}: train first')
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction, default={})
    options = parser.parse_args(['--o', *cfg_options]).o if cfg_options else {}
    cfg = load_run_config(config, work_dir=work_dir, cfg_options=options)
    cfg.load_from = trusted(ckpt)
    return Runner.from_cfg(cfg).test()


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
    """Replace what lies between the results markers of ``path`` with ``text`` (append the markers if absent)."""
    content = open(path).read() if osp.isfile(path) else ''
    block = f'{RESULTS_START}\n{text.rstrip()}\n{RESULTS_END}'
    if RESULTS_START in content and RESULTS_END in content:
        pattern = re.compile(re.escape(RESULTS_START) + '.*?' + re.escape(RESULTS_END), re.S)
        content = pattern.sub(lambda _: block, content, count=1)
    else:
        content = content.rstrip() + '\n\n' + block + '\n'
    with open(path, 'w') as f:
        f.write(content)
