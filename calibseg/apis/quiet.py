"""A quiet console for training and testing runs (``make demo``, ``tools/train.py --quiet``).

mmengine's Runner prints its environment, the whole config, every logging interval and every metric table to the
console. In quiet mode the console gets, per run, one live progress line (iteration, smoothed loss, time left) and
the validation/test result in a few lines, while mmengine's full log still goes to the run's log file
(``<work_dir>/<timestamp>/<timestamp>.log``, named on the console). Warnings of level WARNING and above still reach
the console, and so do Python warnings, except :data:`KNOWN_NOISE`: third-party messages that say nothing about the
user's run.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import time
import warnings
from collections import deque
from typing import Dict, List, Optional, TextIO, Tuple, Type

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import Runner

__all__ = ['KNOWN_NOISE', 'KNOWN_LOG_NOISE', 'filter_known_noise', 'quiet_runner_class', 'ConsoleProgressHook',
           'format_metrics', 'add_console_hooks', 'describe_log']

# (message regex, warning category): matched at the start of the warning's message
KNOWN_NOISE: Tuple[Tuple[str, Type[Warning]], ...] = (
    # setuptools, when mmengine/mmcv import pkg_resources
    (r'pkg_resources is deprecated as an API', Warning),
    # mmseg's decode heads build their losses with its own deprecated helper
    (r'``build_loss`` would be deprecated soon', Warning),
    # mmseg's CrossEntropyLoss advice; calibseg's configs choose avg_non_ignore deliberately
    (r'Default ``avg_non_ignore`` is False', Warning),
    # mmseg's default runtime has a visualization hook that draws nothing unless asked (draw=False)
    (r'The draw is False, it means that the hook for visualization will not take effect', Warning),
)
# messages of mmengine's logger that only report mmengine/mmseg internals (kept in the log file, not on the console)
KNOWN_LOG_NOISE: Tuple[str, ...] = (
    r'The prefix is not set in metric class',  # mmseg's metrics leave mmengine's optional prefix unset
    r'"FileClient" will be deprecated in future',  # mmseg's checkpoint/IO code uses mmengine's old API
    r'"HardDiskBackend" is the alias of "LocalBackend"',
)
# keys shown first in a result summary (the rest follow in the metric's order)
HEADLINE = ('mIoU', 'mAcc', 'aAcc', 'ECE', 'ECE_em_15', 'cwCE_15', 'MCE_15', 'OE_15', 'NLL', 'Brier', 'MAE', 'maxF',
            'Sm')


def filter_known_noise() -> None:
    """Hide :data:`KNOWN_NOISE` (Python warnings filters of this process); other warnings stay visible.

    Example:
        >>> import warnings
        >>> filter_known_noise()
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter('always')
        ...     filter_known_noise()  # ``always`` was added after: re-install the filters in front
        ...     warnings.warn('``build_loss`` would be deprecated soon, please use MODELS.build()')
        ...     warnings.warn('something else')
        >>> [str(w.message) for w in caught]
        ['something else']
    """
    for message, category in KNOWN_NOISE:
        warnings.filterwarnings('ignore', message=message, category=category)


def _drop_known_log_noise(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(re.search(pattern, message) for pattern in KNOWN_LOG_NOISE)


def quiet_runner_class(base: Type[Runner] = Runner) -> Type[Runner]:
    """A subclass of ``base`` whose logger keeps INFO messages out of the console (they still go to the log file).

    mmengine's Runner logs its environment and config while it is being built, so the console handler is
    raised to WARNING as soon as the logger exists (``build_logger``), before anything is logged, and
    :data:`KNOWN_LOG_NOISE` is kept off the console.
    """

    class QuietRunner(base):  # type: ignore[valid-type, misc]
        def build_logger(self, log_level='INFO', log_file=None, **kwargs):
            logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                    handler.setLevel(max(handler.level, logging.WARNING))
                    handler.addFilter(_drop_known_log_noise)
            return logger

        def load_or_resume(self):
            # mmengine's checkpoint loader print()s the file it loads: into the log file instead
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                result = super().load_or_resume()
            for line in printed.getvalue().splitlines():
                self.logger.info(line)
            return result

    QuietRunner.__name__ = QuietRunner.__qualname__ = f'Quiet{base.__name__}'
    return QuietRunner


def format_metrics(metrics: Dict[str, float], *, width: int = 110, max_lines: int = 3,
                   indent: str = '    ') -> List[str]:
    """Result summary lines: headline keys first, ``key value`` pairs wrapped at ``width``.

    Example:
        >>> format_metrics({'aAcc': 80.0, 'mIoU': 37.125, 'ECE': 1.4912, 'note': 'text'})
        ['    mIoU 37.12 | aAcc 80.00 | ECE 1.4912']
    """
    numeric = {k: float(v) for k, v in metrics.items() if _is_number(v)}
    keys = [k for k in HEADLINE if k in numeric] + [k for k in numeric if k not in HEADLINE]
    cells = [f'{k} {_number(numeric[k])}' for k in keys]
    lines, line = [], ''
    for cell in cells:
        candidate = f'{line} | {cell}' if line else cell
        if line and len(indent) + len(candidate) > width:
            lines.append(line)
            line = cell
        else:
            line = candidate
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        shown = sum(line.count(' | ') + 1 for line in lines[:max_lines])
        lines = lines[:max_lines] + [f'(and {len(cells) - shown} more keys in the log)']
    return [indent + line for line in lines]


def _is_number(value) -> bool:
    """A real scalar: Python or numpy number, or a one-element tensor (mmseg's IoUMetric gives numpy floats)."""
    if isinstance(value, (bool, str)) or value is None:
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _number(value: float) -> str:
    if value != value or abs(value) >= 1000 or value == int(value) and abs(value) >= 100:
        return f'{value:.6g}'
    return f'{value:.2f}' if abs(value) >= 10 else f'{value:.4f}'


def _duration(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}' if seconds >= 3600 else \
        f'{seconds // 60}:{seconds % 60:02d}'


class ConsoleProgressHook(Hook):
    """One live progress line per training run and a short result after each validation / test.

    On a terminal the progress line is rewritten in place (carriage return); on a pipe or file one line is
    printed every tenth of the run (each starts with ``label``). Only the main process prints.

    Args:
        label: the run's name on the console.
        stream: where to print (default: ``sys.stdout`` at print time).
        interactive: rewrite the line in place; default: whether ``stream`` is a terminal.
        window: number of iterations the shown loss is averaged over.
        show_results: print the validation / test metrics (``False``: progress only).
    """

    priority = 'VERY_LOW'

    def __init__(self, label: str, *, stream: Optional[TextIO] = None, interactive: Optional[bool] = None,
                 window: int = 20, show_results: bool = True) -> None:
        self.label = label
        self._stream = stream
        self._interactive = interactive
        self.show_results = show_results
        self._losses: deque = deque(maxlen=window)
        self._start: Optional[float] = None
        self._start_iter = 0
        self._open_line = False

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    @property
    def interactive(self) -> bool:
        if self._interactive is not None:
            return self._interactive
        return bool(getattr(self.stream, 'isatty', lambda: False)())

    def _print(self, text: str) -> None:
        if self._open_line:  # finish the live line first
            self.stream.write('\n')
            self._open_line = False
        self.stream.write(text + '\n')
        self.stream.flush()

    def before_train(self, runner) -> None:
        self._start = time.perf_counter()
        self._start_iter = runner.iter
        self._losses.clear()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not is_main_process():
            return
        loss = (outputs or {}).get('loss')
        if loss is not None:
            self._losses.append(float(loss.detach() if hasattr(loss, 'detach') else loss))
        done, total = runner.iter + 1, runner.max_iters
        elapsed = time.perf_counter() - (self._start or time.perf_counter())
        rate = elapsed / max(done - self._start_iter, 1)
        text = f'  {self.label}: iter {done}/{total}'
        if self._losses:
            text += f'  loss {sum(self._losses) / len(self._losses):.4f}'
        text += f'  {_duration(elapsed)} elapsed, {_duration(rate * (total - done))} left'
        if self.interactive:
            self.stream.write('\r' + text.ljust(100))
            self.stream.flush()
            self._open_line = done < total
            if done == total:
                self.stream.write('\n')
        elif done == total or done % max(1, total // 10) == 0:
            self._print(text)

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self._report(runner, 'val', metrics)

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self._report(runner, 'test', metrics)

    def _report(self, runner, stage: str, metrics: Optional[Dict[str, float]]) -> None:
        if not (self.show_results and metrics and is_main_process()):
            return
        where = f' at iter {runner.iter}' if stage == 'val' and runner.iter else ''
        lines = [f'  {self.label}: {stage}{where}'] + format_metrics(metrics)
        self._print('\n'.join(lines))


def describe_log(runner: Runner) -> str:
    """Where the run's full mmengine log is."""
    return f'{runner.log_dir}/{runner.timestamp}.log'


def add_console_hooks(runner: Runner, label: str, *, show_results: bool = True,
                      stream: Optional[TextIO] = None) -> ConsoleProgressHook:
    """Register a :class:`ConsoleProgressHook` on ``runner`` (for quiet runs) and return it."""
    hook = ConsoleProgressHook(label, show_results=show_results, stream=stream)
    runner.register_hook(hook)
    return hook
