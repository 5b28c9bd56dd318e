"""Fit a post-hoc calibrator (TS, CTS, VS, LTS; binary TS / TS+bias) of a trained segmentor and write its file.

    python tools/fit_calibrator.py CONFIG CHECKPOINT [--method ts|cts|vs|lts|tsb] [--split calib|val|...]
        [--out FILE] [--force] [--max-pixels-per-image N] [--seed S] [--resolution auto|label|native]
        [--lts-loss input|native] [--no-cache]
        [--calibrator-cfg k=v ...] [--fit-cfg k=v ...] [--device cpu|cuda] [--weights-only] [--cfg-options ...]

CONFIG is the training config or a post-hoc config (``model.type='CalibratedEncoderDecoder'``; its calibrator is
stripped, the uncalibrated network is fitted, and ``--method`` / ``--out`` default to the config's
``model.calibrator.method`` / ``.file``, so ``tools/test.py`` with the same config then finds the file).
Without a post-hoc config, ``--method`` is required and the file goes next to the checkpoint
(``<dir>/<checkpoint stem>_calib-<method>.pth``). An existing file is refused unless ``--force``; the checkpoint
and the config are never overwritten. The file is written atomically. The checkpoint named here is loaded as a
trusted file, as in ``tools/test.py`` (``--weights-only`` for files of unknown origin).

Split: the dataloader config ``<split>_dataloader``; by default ``calib_dataloader`` when the config has one (the
post-hoc configs define it on images that neither training nor their test split uses), else ``val_dataloader``,
read once each in order. Resolution, LTS loss and memory: see :mod:`calibseg.apis.posthoc`
(``python -c "import calibseg.apis.posthoc as m; help(m)"``).

Printed: the fitted parameters, and ECE_15 (ECE_10 for one-channel heads), NLL, Brier and accuracy on the fitted
pixels before and after calibration (in-sample: evaluate on a separate split with ``tools/test.py``).
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Optional, Sequence

import torch
from mmengine.config import DictAction

from calibseg.calibrators import BINARY_CALIBRATOR_ALIASES, CALIBRATOR_ALIASES

METHODS = sorted(set(CALIBRATOR_ALIASES) | set(BINARY_CALIBRATOR_ALIASES))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='training config, or a post-hoc config (CalibratedEncoderDecoder)')
    parser.add_argument('checkpoint', help='checkpoint of the trained network')
    parser.add_argument('--method', choices=METHODS,
                        help='ts, cts, vs, lts (multi-class heads); ts, tsb (one-channel heads). Default: the '
                             "post-hoc config's model.calibrator.method")
    parser.add_argument('--split', help='dataloader to fit on: NAME or NAME_dataloader (default: calib_dataloader '
                                        'if the config has one, else val_dataloader)')
    parser.add_argument('--out', help="calibrator file (default: the post-hoc config's model.calibrator.file, "
                                      'else <checkpoint dir>/<checkpoint stem>_calib-<method>.pth)')
    parser.add_argument('--force', action='store_true', help='overwrite an existing --out (never the inputs)')
    parser.add_argument('--max-pixels-per-image', type=int, default=10000,
                        help='labelled pixels kept per image for ts/cts/vs/tsb (0: all; default 10000)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the pixel sub-sampling')
    parser.add_argument('--resolution', choices=['auto', 'label', 'native'], default='auto',
                        help='auto: label resolution for ts/cts/vs/tsb, native for lts')
    parser.add_argument('--lts-loss', choices=['input', 'native'], default='input',
                        help='lts: NLL after the bilinear resize to the input against the input-frame labels '
                             '(default), or at the native logit pixels against labels sampled there')
    parser.add_argument('--no-cache', action='store_true',
                        help='re-run the network on every optimiser pass instead of keeping the data in memory')
    parser.add_argument('--calibrator-cfg', nargs='+', action=DictAction, default={},
                        help='constructor arguments of the calibrator, e.g. use_image=True hidden_channels=8')
    parser.add_argument('--fit-cfg', nargs='+', action=DictAction, default={},
                        help='arguments of fit(), e.g. epochs=20 lr=0.005 for lts')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--weights-only', action='store_true',
                        help="load the checkpoint with torch's safe loader (weights_only=True)")
    parser.add_argument('--log-every', type=int, default=0, help='progress line every N images (0: none)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    args = parser.parse_args(argv)
    if args.max_pixels_per_image < 0:
        parser.error('--max-pixels-per-image must be >= 0')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    import calibseg  # noqa: F401  (registers calibseg's modules)
    from calibseg.apis import fit_calibrator, progress_printer
    from calibseg.apis.posthoc import format_fit_report

    command = ' '.join(['tools/fit_calibrator.py', *argv] if argv is not None else sys.argv)
    progress = progress_printer('[fit_calibrator] inference', every=args.log_every) if args.log_every else None
    result = fit_calibrator(
        args.method, config=args.config, checkpoint=args.checkpoint, split=args.split,
        cfg_options=args.cfg_options, resolution=args.resolution, max_pixels_per_image=args.max_pixels_per_image,
        seed=args.seed, cache=not args.no_cache, calibrator_cfg=args.calibrator_cfg, fit_cfg=args.fit_cfg,
        lts_loss=args.lts_loss, device=args.device, weights_only=args.weights_only, out=args.out, force=args.force,
        meta={'command': command}, progress=progress)
    print(format_fit_report(result), flush=True)
    return result


if __name__ == '__main__':
    main()
