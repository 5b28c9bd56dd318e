"""Which trained model stays calibrated under corruption? Compare several models (and post-hoc fixes) under shift.

    python tools/compare_shift.py --out DIR \
        --model ce CONFIG CHECKPOINT --model mbls CONFIG CHECKPOINT ...   # and/or
        --work-dirs work_dirs/ce work_dirs/mbls ...                        # newest checkpoint + dumped config
        [--calibrators ts lts --calibrate ce] [--corruptions all | NAME ... | FAMILY ...] [--severities 1 3 5]
        [--fit-split auto] [--cfg-options key=value ...] [--resume | --force]

Runs the calibration analysis with its corruption sweep for every model into DIR/<name>/ and writes
DIR/comparison.md, DIR/comparison.json and figures of ECE_15 and mIoU (saliency heads: MAE, max-F, ECE_10) against
severity, one line per model and per calibrated model (``ce+ts``). A command line over
:func:`calibseg.analysis.shift_comparison.compare_under_shift`.
"""
import argparse
import os
import sys

from mmengine.config import DictAction


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Compare the calibration of trained models under corruption '
                                                 '(calibseg)')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--model', nargs=3, action='append', default=[], metavar=('NAME', 'CONFIG', 'CHECKPOINT'),
                        help='a model: its name (line and folder), config (file or mmseg::...) and checkpoint')
    parser.add_argument('--work-dirs', nargs='+', default=[], metavar='DIR',
                        help='mmengine work dirs: newest checkpoint and the dumped config; named after the folder')
    parser.add_argument('--calibrators', nargs='+', default=[], metavar='METHOD',
                        help='post-hoc calibrators fitted on clean data: ts cts vs lts (one-channel heads: ts tsb)')
    parser.add_argument('--calibrate', nargs='+', default=None, metavar='NAME',
                        help='models that get --calibrators (default: all models)')
    parser.add_argument('--corruptions', nargs='+', default=['all'],
                        help='corruption names, family names (noise blur weather digital) or all (default)')
    parser.add_argument('--severities', type=int, nargs='+', default=[1, 3, 5], help='severities 1..5')
    parser.add_argument('--fit-split', default='auto', help='where calibrators are fitted (as analyze_calibration)')
    parser.add_argument('--held-out', type=float, default=0.2, help='fraction held out for the held-out split')
    parser.add_argument('--worst-k', type=int, default=6, help='worst-calibrated images in each model report')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='overrides applied to every model')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda when available)')
    parser.add_argument('--weights-only', action='store_true', help="load checkpoints with torch's safe loader")
    parser.add_argument('--seed', type=int, default=0)
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--resume', action='store_true', help='continue a comparison in --out')
    group.add_argument('--force', action='store_true', help='redo a comparison that --out already holds')
    parser.add_argument('--quiet', action='store_true', help='no progress lines')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if not args.model and not args.work_dirs:
        parser.error('give at least one --model NAME CONFIG CHECKPOINT or --work-dirs DIR')
    if args.calibrate and not args.calibrators:
        parser.error('--calibrate needs --calibrators')
    names = [m[0] for m in args.model] + [os.path.basename(os.path.normpath(d)) for d in args.work_dirs]
    unknown = sorted(set(args.calibrate or ()) - set(names))
    if unknown:
        parser.error(f'--calibrate {" ".join(unknown)}: no such model (models: {" ".join(names)})')
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from calibseg.analysis.shift_comparison import ShiftEntry, compare_under_shift, entry_from_work_dir

    entries = [ShiftEntry(name, config, ckpt) for name, config, ckpt in args.model]
    try:
        entries += [entry_from_work_dir(d) for d in args.work_dirs]
    except (OSError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    targets = {e.name for e in entries} if args.calibrate is None else set(args.calibrate)
    entries = [ShiftEntry(e.name, e.config, e.checkpoint, tuple(args.calibrators) if e.name in targets else ())
               for e in entries]
    compare_under_shift(entries, out_dir=args.out, corruptions=args.corruptions, severities=args.severities,
                        cfg_options=args.cfg_options, fit_split=args.fit_split, held_out=args.held_out,
                        worst_k=args.worst_k, device=args.device, weights_only=args.weights_only, seed=args.seed,
                        force=args.force, resume=args.resume, launcher=args.launcher, verbose=not args.quiet)
    return 0


if __name__ == '__main__':
    sys.exit(main())
