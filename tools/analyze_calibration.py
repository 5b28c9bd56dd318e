"""Where is a segmentation model miscalibrated? One command for any mmseg config and checkpoint.

    python tools/analyze_calibration.py CONFIG CHECKPOINT --out DIR [--calibrators ts cts vs lts]
        [--fit-split auto|heldout|calib|val|train|NAME] [--boundary-width 2] [--distance-bands 1 2 4 8 16 32]
        [--worst-k 6] [--corruptions all | NAME ... | FAMILY ...] [--severities 1 3 5]
        [--cfg-options key=value ...] [--resume | --force]
    bash tools/dist_analyze.sh CONFIG CHECKPOINT NPROC --out DIR ...     # torchrun: same report as one process

CONFIG is a config file or an mmseg package config (``mmseg::deeplabv3plus/...py``), used unchanged: the
calibration evaluation is added by the tool. Writes DIR/report.md, its figures and DIR/results.json. A command line
over :func:`calibseg.apis.analyze_calibration`.
"""
import argparse
import os

from mmengine.config import DictAction


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Analyse the calibration of an mmseg model (calibseg)')
    parser.add_argument('config', help='config file or mmseg package config (mmseg::path/to/config.py)')
    parser.add_argument('checkpoint', help='checkpoint file (loaded as trusted unless --weights-only)')
    parser.add_argument('--out', required=True, help='output directory for report.md, figures and results.json')
    parser.add_argument('--calibrators', nargs='*', default=[], metavar='METHOD',
                        help='post-hoc calibrators to fit and compare: ts cts vs lts (one-channel heads: ts tsb)')
    parser.add_argument('--fit-split', default='auto',
                        help="where calibrators are fitted: auto (calib_dataloader, else a val_dataloader on other "
                             "data, else 20%% held out of the test set), heldout, or a dataloader name")
    parser.add_argument('--held-out', type=float, default=0.2, help='fraction held out for --fit-split heldout')
    parser.add_argument('--boundary-width', type=float, default=2.0, help='boundary band width in pixels')
    parser.add_argument('--distance-bands', type=float, nargs='+', default=[1, 2, 4, 8, 16, 32],
                        help='edges (pixels) of the distance bands')
    parser.add_argument('--worst-k', type=int, default=6, help='images in the worst-calibrated gallery')
    parser.add_argument('--corruptions', nargs='*', default=[],
                        help='corruptions to evaluate under: names, family names (noise blur weather digital) '
                             'or all')
    parser.add_argument('--severities', type=int, nargs='+', default=[1, 3, 5], help='severities 1..5')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings, key=value')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--weights-only', action='store_true', help="load the checkpoint with torch's safe loader")
    parser.add_argument('--max-pixels', type=int, default=10000, help='labelled pixels per image for fitting')
    parser.add_argument('--seed', type=int, default=0)
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--resume', action='store_true', help='continue an analysis in --out (keeps shift results)')
    group.add_argument('--force', action='store_true', help='redo an analysis that --out already holds')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from calibseg.apis import analyze_calibration

    analyze_calibration(args.config, args.checkpoint, out_dir=args.out, cfg_options=args.cfg_options,
                        calibrators=args.calibrators, fit_split=args.fit_split, held_out=args.held_out,
                        boundary_width=args.boundary_width, distance_bands=args.distance_bands,
                        worst_k=args.worst_k, corruptions=args.corruptions, severities=args.severities,
                        launcher=args.launcher, device=args.device, weights_only=args.weights_only,
                        max_pixels_per_image=args.max_pixels, seed=args.seed, force=args.force,
                        resume=args.resume, verbose=not args.quiet)


if __name__ == '__main__':
    main()
