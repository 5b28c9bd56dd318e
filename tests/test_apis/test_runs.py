"""calibseg.apis.train / test: in-process runs through mmengine's Runner, several in one process, quiet console,
deterministic losses, test-only runs that need no training data."""
from __future__ import annotations

import glob
import json
import os.path as osp

import pytest
import torch
from calibseg_testing import DEMO_CONFIG, tiny_run_options

from calibseg import apis
from calibseg.apis.experiment import DETERMINISTIC_OPTIONS, reproducible
from calibseg.apis.runs import parse_cfg_options
from calibseg.utils.run_setup import load_run_config

ITERS = 3


def _losses(work_dir: str):
    """Per-iteration training losses of the run's own scalars.json (exactly one log directory per run)."""
    files = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    assert len(files) == 1, files
    with open(files[0]) as f:
        records = [json.loads(line) for line in f]
    return [(r['step'], r['loss']) for r in records if 'lr' in r]


@pytest.fixture(scope='module')
def two_runs(tiny_voc, tmp_path_factory):
    """The same tiny training twice in this process, quietly and deterministically."""
    root = tmp_path_factory.mktemp('in_process')
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    options = dict(tiny_run_options(tiny_voc, max_iters=ITERS), **parse_cfg_options(reproducible()))
    options['default_hooks.checkpoint.interval'] = ITERS
    try:
        runners = [apis.train(DEMO_CONFIG, work_dir=str(root / name), cfg_options=options, quiet=True)
                   for name in ('first', 'second')]
    finally:  # process-wide settings: leave them as the other tests expect them
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill
    yield root, runners


def test_two_trainings_in_one_process_are_independent_and_identical(two_runs):
    root, (first, second) = two_runs
    assert first.iter == second.iter == ITERS
    # each run has its own logger, message hub and visualizer (and so its own log directory and scalars)
    assert first.experiment_name != second.experiment_name
    assert first.visualizer is not second.visualizer and first.message_hub is not second.message_hub
    assert first.logger is not second.logger
    losses = [_losses(str(root / name)) for name in ('first', 'second')]
    assert [step for step, _ in losses[0]] == list(range(1, ITERS + 1))
    assert losses[0] == losses[1]  # bit-identical: same seed, deterministic algorithms, fixed thread count


def test_first_losses_of_the_demo_config_are_pinned(two_runs):
    """The demo's figures are reproducible on this kind of machine: the first iterations' losses are pinned."""
    root, _ = two_runs
    losses = [loss for _, loss in _losses(str(root / 'first'))]
    assert losses == pytest.approx(PINNED_LOSSES, rel=1e-4), losses


def test_quiet_console_is_short(tiny_voc, tmp_path, capsys):
    options = tiny_run_options(tiny_voc, max_iters=2)
    apis.train(DEMO_CONFIG, work_dir=str(tmp_path), cfg_options=options, quiet=True)
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if ': iter ' in line]
    assert len(progress) == 2 and 'loss ' in progress[-1] and ' left' in progress[-1]
    assert len(lines) - len(progress) <= 6, lines
    assert any(': val at iter 2' in line for line in lines) and not any('System environment' in x for x in lines)


def test_test_only_run_needs_only_the_test_data(two_runs, tiny_voc, tmp_path):
    root, _ = two_runs
    options = tiny_run_options(tiny_voc)
    missing = str(tmp_path / 'no_training_data')
    for key in ('train_dataloader.dataset.datasets.0.data_root', 'train_dataloader.dataset.datasets.1.data_root',
                'val_dataloader.dataset.data_root'):
        options[key] = missing
    with pytest.raises(FileNotFoundError, match='no_training_data'):  # a training run checks every loader
        load_run_config(DEMO_CONFIG, work_dir=str(tmp_path / 'train'), cfg_options=options)
    metrics = apis.test(DEMO_CONFIG, str(root / 'first' / f'iter_{ITERS}.pth'), work_dir=str(tmp_path / 'test'),
                        cfg_options=options, quiet=True)
    assert 0 <= metrics['mIoU'] <= 100 and 'ECE' in metrics
    options['test_dataloader.dataset.data_root'] = missing
    with pytest.raises(FileNotFoundError, match='test_dataloader.dataset.data_root'):
        apis.test(DEMO_CONFIG, str(root / 'first' / f'iter_{ITERS}.pth'), work_dir=str(tmp_path / 'test'),
                  cfg_options=options)


def test_cfg_options_parse_like_the_command_line():
    assert parse_cfg_options(list(DETERMINISTIC_OPTIONS)) == {'randomness.seed': 0,
                                                              'randomness.deterministic': True}
    assert parse_cfg_options({'a': 1}) == {'a': 1} and parse_cfg_options(None) == {}


# the logged losses of the first 3 iterations of the demo CE config on the tiny data (seed 0, 2 threads,
# deterministic), measured on this machine kind (x86-64, torch 2.13 CPU): a change means the model, the data, the
# initialisation or the numerics changed, not noise
PINNED_LOSSES = [4.148322582244873, 4.0920891761779785, 3.975434144337972]
