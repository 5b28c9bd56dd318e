"""Share of ``PixelCalibrationMetric`` in mmseg's test loop (issue 16).

Runs a real mmengine ``Runner`` test loop (mmseg's ``TestLoop``: data loading, the model's ``test_step``, the
``Evaluator``) twice per case, with ``IoUMetric`` alone and with ``IoUMetric`` + ``PixelCalibrationMetric``
(default keys), on

* ``demo``: the demo config ``configs/baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py`` (FCN R-18) on
  demo VOC images generated into a temporary directory (``calibseg.datasets.demo``, 96x96);
* ``deeplab``: calibseg's DeepLabV3+ R-50 VOC config (``configs/baseline/deeplabv3plus_r50-d8_ce_4xb4-20k_voc12aug-
  512x512.py``, 21 classes) on generated 512x512 images;

both with random weights (no checkpoint is loaded; the test loop does not initialise weights, so nothing is
downloaded) and without the reliability-diagram hook. The first image of each loop is a warm-up and is not timed.
For each run it prints the loop time per image and the time spent inside each metric's ``process`` (measured by
wrapping it), and the added share ``(with - without) / without`` of the loop per image, plus the
calibration metric's ``evaluate()`` (once per evaluation, not per image). Runs alternate (without, with,
without, with, ...) ``--repeat`` times, so the spread between repeats shows the noise::

    python bench/bench_test_loop.py                       # both cases, 4 timed images, 2 repeats
    python bench/bench_test_loop.py --case deeplab --images 3 --repeat 1
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
import time
import uuid

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'demo': (osp.join(ROOT, 'configs', 'baseline', 'fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py'), 96),
    'deeplab': (osp.join(ROOT, 'configs', 'baseline', 'deeplabv3plus_r50-d8_ce_4xb4-20k_voc12aug-512x512.py'), 512),
}
IOU = dict(type='IoUMetric', iou_metrics=['mIoU'])
CALIB = dict(type='PixelCalibrationMetric', ignore_index=255)


class _Timer:
    """Accumulates the wall time of the wrapped metric methods (installed once per process)."""

    def __init__(self) -> None:
        self.totals = {}

    def wrap(self, cls, method: str, key: str) -> None:
        original = getattr(cls, method)
        timer = self

        def timed(self, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                timer.totals[key] = timer.totals.get(key, 0.0) + time.perf_counter() - start

        setattr(cls, method, timed)


def _iteration_hook(times: list, timer: _Timer):
    from mmengine.hooks import Hook

    class IterationTimes(Hook):
        """Records the end time of every test iteration (with the metrics' accumulated process times so far)
        and of the epoch (after ``evaluate``)."""

        def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            times.append(('iter', time.perf_counter(), dict(timer.totals)))

        def after_test_epoch(self, runner, metrics=None) -> None:
            times.append(('end', time.perf_counter(), dict(timer.totals)))

    return IterationTimes()


def build_runner(case: str, data_root: str, work_dir: str, with_calibration: bool):
    from mmengine.config import Config
    from mmengine.runner import Runner

    config, _ = CONFIGS[case]
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'bench_{case}_{uuid.uuid4().hex[:8]}'
    cfg.visualizer.name = cfg.experiment_name  # a fresh visualizer: mmengine keeps them by name
    cfg.load_from = None
    cfg.resume = False
    cfg.log_level = 'WARNING'
    cfg.custom_hooks = []
    cfg.model.pretrained = None
    cfg.test_dataloader.dataset.data_root = data_root
    cfg.test_dataloader.dataset.ann_file = 'ImageSets/Segmentation/val.txt'
    cfg.test_dataloader.dataset.data_prefix = dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug')
    cfg.test_dataloader.batch_size = 1
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg.test_evaluator = [IOU, CALIB] if with_calibration else [IOU]
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler', 'val_dataloader', 'val_cfg',
                'val_evaluator'):
        cfg.pop(key, None)
    cfg.default_hooks.pop('visualization', None)
    return Runner.from_cfg(cfg)


def run_once(case: str, data_root: str, with_calibration: bool, timer: _Timer) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as work_dir:
        runner = build_runner(case, data_root, work_dir, with_calibration)
        times: list = []
        runner.register_hook(_iteration_hook(times, timer), priority='LOWEST')
        timer.totals.clear()
        torch.manual_seed(0)
        metrics = runner.test()
    iters = [(t, totals) for kind, t, totals in times if kind == 'iter']
    _, end_totals = [(t, totals) for kind, t, totals in times if kind == 'end'][0]
    # the first iteration (warm-up) is not timed: everything from the end of the first to the end of the last
    (t0, first), (t1, last) = iters[0], iters[-1]
    n_timed = len(iters) - 1

    def spent(key: str) -> float:
        return (last.get(key, 0.0) - first.get(key, 0.0)) / n_timed

    return dict(loop_s=(t1 - t0) / n_timed, n=n_timed, iou_process_s=spent('iou.process'),
                calib_process_s=spent('calib.process'), calib_evaluate_s=end_totals.get('calib.evaluate', 0.0),
                miou=metrics.get('mIoU'), ece=metrics.get('ECE'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--case', choices=('demo', 'deeplab', 'both'), default='both')
    parser.add_argument('--images', type=int, default=4, help='timed images per loop (one more is the warm-up)')
    parser.add_argument('--repeat', type=int, default=2, help='alternating (without, with) pairs per case')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: torch default)')
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    import torch
    from mmengine.registry import init_default_scope
    from mmseg.evaluation import IoUMetric

    import calibseg  # noqa: F401  (registers the metric)
    from calibseg.datasets.demo import generate_voc_aug
    from calibseg.evaluation import PixelCalibrationMetric

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    init_default_scope('mmseg')
    timer = _Timer()
    timer.wrap(IoUMetric, 'process', 'iou.process')
    timer.wrap(PixelCalibrationMetric, 'process', 'calib.process')
    timer.wrap(PixelCalibrationMetric, 'evaluate', 'calib.evaluate')
    cases = ('demo', 'deeplab') if args.case == 'both' else (args.case,)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} timed images + 1 warm-up, '
          f'batch size 1')
    for case in cases:
        _, size = CONFIGS[case]
        with tempfile.TemporaryDirectory() as data:
            generate_voc_aug(data, num_train=1, num_val=args.images + 1, size=size, seed=0)
            data_root = osp.join(data, 'VOCdevkit', 'VOC2012')
            rows = []
            for rep in range(args.repeat):
                without = run_once(case, data_root, False, timer)
                with_ = run_once(case, data_root, True, timer)
                added = (with_['loop_s'] - without['loop_s']) / without['loop_s']
                direct = with_['calib_process_s'] / without['loop_s']
                rows.append((added, direct))
                print(f"[{case} {size}x{size}, run {rep + 1}] loop per image: IoU only {1e3 * without['loop_s']:.1f} ms"
                      f" (IoUMetric.process {1e3 * without['iou_process_s']:.2f} ms), IoU + calibration "
                      f"{1e3 * with_['loop_s']:.1f} ms (PixelCalibrationMetric.process "
                      f"{1e3 * with_['calib_process_s']:.2f} ms); calibration evaluate() "
                      f"{1e3 * with_['calib_evaluate_s']:.0f} ms once per evaluation")
                print(f'    added share of the loop per image: {100 * added:+.1f} % (loop times), '
                      f'{100 * direct:.1f} % (process time / loop time without it)')
            adds = [a for a, _ in rows]
            directs = [d for _, d in rows]
            verdict = 'ok' if max(directs) <= 0.10 else 'ABOVE TARGET'
            print(f'{case}: added share per image {100 * min(adds):+.1f} .. {100 * max(adds):+.1f} % by loop times, '
                  f'{100 * min(directs):.1f} .. {100 * max(directs):.1f} % by process time over {args.repeat} '
                  f'run(s) (target <= 10 % at 512x512: {verdict if size >= 512 else "n/a"})')


if __name__ == '__main__':
    os.environ.setdefault('PYTHONWARNINGS', 'ignore')
    main()
