"""ReliabilityDiagramHook: files from the statistics a calibration metric published, and the re-draw tool."""
from __future__ import annotations

import json
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

from calibseg_testing import ROOT, make_samples, run_metric
from mmengine.logging import MessageHub

from calibseg.engine.hooks import RELIABILITY_INFO_PREFIX, ReliabilityDiagramHook
from calibseg.evaluation import PixelCalibrationMetric


def test_hook_writes_json_png_and_redraws(tmp_path):
    hub = MessageHub.get_current_instance()
    hub.runtime_info.clear()
    metrics = run_metric(PixelCalibrationMetric(), make_samples(3))
    runner = SimpleNamespace(log_dir=str(tmp_path), iter=12, visualizer=None)
    ReliabilityDiagramHook(classwise=True).after_val_epoch(runner, metrics)
    stem = tmp_path / 'reliability' / 'val_12_PixelCalibrationMetric'
    record = json.loads((tmp_path / 'reliability' / 'val_12_PixelCalibrationMetric.json').read_text())
    assert sum(record['top_label']['count']) == record['num_pixels'] > 0
    assert record['scalars']['ECE'] == metrics['ECE']
    assert osp.getsize(f'{stem}.png') > 1000 and osp.getsize(f'{stem}_classwise.png') > 1000
    # drawn once: the statistics are removed from the hub (they would otherwise land in checkpoints)
    assert not any(k.startswith(RELIABILITY_INFO_PREFIX) for k in hub.runtime_info)

    out = tmp_path / 'again.png'
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'plot_reliability.py'), f'{stem}.json',
                           '--out', str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert osp.getsize(out) > 1000


def test_hook_without_statistics_only_warns(tmp_path):
    MessageHub.get_current_instance().runtime_info.clear()
    runner = SimpleNamespace(log_dir=str(tmp_path), iter=0, visualizer=None)
    ReliabilityDiagramHook().after_test_epoch(runner, {})
    assert not (tmp_path / 'reliability').exists()


def test_local_vis_backend_saves_the_diagram_and_scalars(tmp_path):
    from mmengine.visualization import Visualizer

    MessageHub.get_current_instance().runtime_info.clear()
    metrics = run_metric(PixelCalibrationMetric(), make_samples(2))
    visualizer = Visualizer(name='reliability_hook_test', save_dir=str(tmp_path / 'vis'),
                            vis_backends=[dict(type='LocalVisBackend')])
    runner = SimpleNamespace(log_dir=str(tmp_path), iter=3, visualizer=visualizer)
    ReliabilityDiagramHook().after_val_epoch(runner, metrics)
    saved = list((tmp_path / 'vis' / 'vis_data' / 'vis_image').glob('*.png'))
    assert [p.name for p in saved] == ['val_reliability_PixelCalibrationMetric_3.png']
    scalars = [json.loads(line) for line in (tmp_path / 'vis' / 'vis_data' / 'scalars.json').read_text().splitlines()]
    assert scalars[0]['val/calibration/ECE'] == metrics['ECE']


def test_hook_draws_the_distance_band_curve(tmp_path):
    MessageHub.get_current_instance().runtime_info.clear()
    samples = make_samples(3)
    for s in samples:  # regions of one label, so that distances vary
        s['gt_sem_seg']['data'][0, :, :4] = 1
        s['gt_sem_seg']['data'][0, :, 4:] = 2
    metrics = run_metric(PixelCalibrationMetric(boundary_width=1, distance_bands=(0, 1, 2)), samples)
    runner = SimpleNamespace(log_dir=str(tmp_path), iter=5, visualizer=None)
    ReliabilityDiagramHook().after_test_epoch(runner, metrics)
    stem = tmp_path / 'reliability' / 'test_5_PixelCalibrationMetric'
    record = json.loads(stem.with_suffix('.json').read_text())
    bands = record['distance_bands']
    assert bands['upper'] == [0, 1, 2, None] and sum(bands['count']) == record['num_pixels']
    assert bands['count'][-1] > 0 and bands['ECE'][0] is not None
    assert osp.getsize(f'{stem}_distance.png') > 1000
