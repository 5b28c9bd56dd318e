"""calibseg.apis.quiet: the live progress line, the short result summary, the known-noise filters."""
from __future__ import annotations

import io
import logging
import warnings
from types import SimpleNamespace

import torch

from calibseg.apis.quiet import (
    KNOWN_LOG_NOISE,
    ConsoleProgressHook,
    _drop_known_log_noise,
    filter_known_noise,
    format_metrics,
)


def _iterate(hook, total, losses):
    runner = SimpleNamespace(iter=0, max_iters=total)
    hook.before_train(runner)
    for i, loss in enumerate(losses):
        runner.iter = i
        hook.after_train_iter(runner, i, outputs={'loss': torch.tensor(loss, requires_grad=True)})
    runner.iter = total
    hook.after_val_epoch(runner, {'mIoU': 50.0, 'ECE': 1.25})


def test_terminal_progress_is_one_rewritten_line():
    stream = io.StringIO()
    _iterate(ConsoleProgressHook('run', stream=stream, interactive=True, window=2), 4, [4.0, 2.0, 1.0, 3.0])
    text = stream.getvalue()
    lines = text.split('\n')
    assert text.count('\r') == 4 and lines[0].count('\r') == 4  # four updates of one console line
    last = lines[0].split('\r')[-1]
    assert last.startswith('  run: iter 4/4  loss 2.0000') and '0:00 left' in last  # mean of the last 2 losses
    assert lines[1] == '  run: val at iter 4' and lines[2] == '    mIoU 50.00 | ECE 1.2500'


def test_pipe_progress_prints_a_line_per_tenth():
    stream = io.StringIO()
    _iterate(ConsoleProgressHook('run', stream=stream, interactive=False), 30, [1.0] * 30)
    lines = stream.getvalue().splitlines()
    progress = [line for line in lines if ': iter ' in line]
    assert [line.split()[2] for line in progress] == [f'{i}/30' for i in range(3, 31, 3)]
    assert '\r' not in stream.getvalue() and lines[-2] == '  run: val at iter 30'


def test_results_can_be_left_out():
    stream = io.StringIO()
    hook = ConsoleProgressHook('run', stream=stream, interactive=False, show_results=False)
    hook.after_test_epoch(SimpleNamespace(iter=0), {'mIoU': 1.0})
    assert stream.getvalue() == ''


def test_summary_wraps_and_caps_its_lines():
    metrics = {f'key_{i:02d}': float(i) for i in range(40)}
    metrics.update(mIoU=37.125, NLL=0.67261)
    lines = format_metrics(metrics, width=60, max_lines=3)
    assert lines[0].startswith('    mIoU 37.12 | NLL 0.6726 | key_00 0.0000')
    assert len(lines) == 4 and all(len(line) <= 60 for line in lines[:3])
    shown = sum(line.count(' | ') + 1 for line in lines[:3])
    assert lines[3] == f'    (and {42 - shown} more keys in the log)'


def test_known_noise_is_hidden_and_other_warnings_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        filter_known_noise()
        warnings.warn('pkg_resources is deprecated as an API. See https://setuptools', UserWarning, stacklevel=1)
        warnings.warn('``build_loss`` would be deprecated soon, please use MODELS.build()', stacklevel=1)
        warnings.warn('Default ``avg_non_ignore`` is False, if you would like to ...', stacklevel=1)
        warnings.warn('your own warning', UserWarning, stacklevel=1)
        warnings.warn('pkg_resources is fine here', UserWarning, stacklevel=1)  # matched from the message start only
    assert [str(w.message) for w in caught] == ['your own warning', 'pkg_resources is fine here']
    record = logging.LogRecord('mmengine', logging.WARNING, __file__, 1, 'The prefix is not set in metric class '
                               'IoUMetric.', None, None)
    assert not _drop_known_log_noise(record) and KNOWN_LOG_NOISE
    record.msg = 'The model and loaded state dict do not match exactly'
    assert _drop_known_log_noise(record)
