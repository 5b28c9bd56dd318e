"""Fold a fitted TS, CTS or VS calibrator into the decode head's classifier and write a plain mmseg checkpoint.

    python tools/export_calibrated_checkpoint.py CONFIG CHECKPOINT CALIBRATOR OUT [--force] [--weights-only]
        [--cfg-options k=v ...]

The uncalibrated config (``EncoderDecoder``) loaded with OUT gives the calibrated logits, with no calibseg
component at test time (see :mod:`calibseg.apis.export` for the folding and the file). OUT is written atomically;
an existing OUT is refused unless ``--force``, and OUT may never be one of the inputs. Local temperature scaling
cannot be folded (test it with its ``CalibratedEncoderDecoder`` config).
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from mmengine.config import DictAction


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='training config (or a post-hoc config) of the checkpoint')
    parser.add_argument('checkpoint', help='checkpoint of the trained network')
    parser.add_argument('calibrator', help='calibrator file written by tools/fit_calibrator.py (TS, CTS, VS)')
    parser.add_argument('out', help='the exported checkpoint')
    parser.add_argument('--force', action='store_true', help='overwrite an existing OUT (never an input)')
    parser.add_argument('--weights-only', action='store_true',
                        help="load the checkpoint with torch's safe loader (weights_only=True)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (mmengine syntax)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    import calibseg  # noqa: F401  (registers calibseg's modules)
    from calibseg.apis import export_calibrated_checkpoint

    payload = export_calibrated_checkpoint(args.config, args.checkpoint, args.calibrator, args.out,
                                           weights_only=args.weights_only, force=args.force,
                                           cfg_options=args.cfg_options)
    print(f"[export] folded {payload['meta']['calibseg_export']['calibrator_describe']} into "
          f'decode_head.conv_seg; wrote {args.out} (test it with the uncalibrated config)')


if __name__ == '__main__':
    main()
