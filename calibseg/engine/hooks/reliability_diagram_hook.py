"""Write reliability diagrams and per-bin statistics after every val/test run."""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Dict, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, print_log
from mmseg.registry import HOOKS

from ...evaluation.message_keys import RELIABILITY_INFO_PREFIX
from ...visualization import plot_classwise_reliability, plot_distance_bands, plot_reliability_diagram

# calibseg's calibration metrics publish their merged per-bin statistics in the message hub's runtime info
# under RELIABILITY_INFO_PREFIX (one key per metric instance): ``after_val_epoch`` only receives scalars.

__all__ = ['ReliabilityDiagramHook', 'RELIABILITY_INFO_PREFIX']


@HOOKS.register_module()
class ReliabilityDiagramHook(Hook):
    """Draw reliability diagrams from the statistics that calibseg's calibration metrics publish.

    At the end of each val/test run, for every calibration metric of the evaluator, writes into
    ``<work_dir>/<timestamp>/reliability/`` (or ``out_dir``):

    * ``{mode}_{step}_{metric}.json``: per-bin counts, mean confidence and accuracy (top-label; per class when
      the metric collects classwise statistics), the headline scalars and the aggregation;
    * ``{mode}_{step}_{metric}.png``: the top-label reliability diagram with the confidence histogram;
    * ``{mode}_{step}_{metric}_classwise.png`` when ``classwise=True``;
    * ``{mode}_{step}_{metric}_distance.png`` when the metric has ``distance_bands``: ECE_15, accuracy and mean
      confidence per band of distance to the nearest label boundary (the bands are in the JSON file too).

    The diagram also goes to the visualizer backends as an image and the headline calibration scalars under
    ``calibration/`` (so TensorBoard shows them when its backend is enabled). ``tools/plot_reliability.py``
    re-draws the PNGs from the JSON files.

    Args:
        classwise: also draw the per-class diagrams.
        out_dir: folder for the files; default ``<log_dir>/reliability``.
        max_classes: at most this many classes in the classwise figure.
    """

    priority = 'LOW'

    def __init__(self, *, classwise: bool = False, out_dir: Optional[str] = None, max_classes: int = 30) -> None:
        self.classwise = bool(classwise)
        self.out_dir = out_dir
        self.max_classes = int(max_classes)

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self._write(runner, 'val', runner.iter)

    def after_test_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self._write(runner, 'test', runner.iter)

    def _write(self, runner, mode: str, step: int) -> None:
        hub = MessageHub.get_current_instance()
        records = {key[len(RELIABILITY_INFO_PREFIX):]: value for key, value in hub.runtime_info.items()
                   if key.startswith(RELIABILITY_INFO_PREFIX)}
        if not records:
            print_log('ReliabilityDiagramHook: no calibseg calibration metric published statistics in this '
                      f'{mode} run (add PixelCalibrationMetric or BinaryCalibrationMetric to the evaluator)',
                      logger='current', level=30)
            return
        out_dir = self.out_dir or osp.join(runner.log_dir, 'reliability')
        for name, record in records.items():
            hub.runtime_info.pop(RELIABILITY_INFO_PREFIX + name)  # drawn once; keeps checkpoints small
            stem = osp.join(out_dir, f'{mode}_{step}_{name}')
            if is_main_process():
                os.makedirs(out_dir, exist_ok=True)
                with open(stem + '.json', 'w') as f:
                    json.dump(record, f, indent=1)
                title = f"{name} ({mode}, step {step}, {record.get('aggregation', 'pooled')}, " \
                        f"{record['num_pixels']:.3g} px)"
                scalars = record.get('scalars', {})
                png = plot_reliability_diagram(record['top_label'], stem + '.png', title=title, scalars=scalars)
                if self.classwise and record.get('classwise'):
                    plot_classwise_reliability(record['classwise'], stem + '_classwise.png', title=title,
                                               max_classes=self.max_classes)
                if record.get('distance_bands'):
                    curve = plot_distance_bands(record['distance_bands'], stem + '_distance.png', title=title)
                    print_log(f'calibration against boundary distance: {curve}', logger='current')
                self._to_visualizer(runner, mode, name, png, scalars, step)
                print_log(f'reliability diagram: {png}', logger='current')

    @staticmethod
    def _to_visualizer(runner, mode: str, name: str, png: str, scalars: Dict[str, float], step: int) -> None:
        visualizer = getattr(runner, 'visualizer', None)
        if visualizer is None:
            return
        import numpy as np
        from PIL import Image

        image = np.asarray(Image.open(png).convert('RGB'))
        # no '/' in the name: LocalVisBackend uses it as a file name and silently saves nothing otherwise
        visualizer.add_image(f'{mode}_reliability_{name}', image, step=step)
        if scalars:
            visualizer.add_scalars({f'{mode}/calibration/{k}': float(v) for k, v in scalars.items()}, step=step)
