"""Re-draw reliability diagrams from the JSON files written by ReliabilityDiagramHook.

    python tools/plot_reliability.py work_dirs/run/2026.../reliability/test_600_PixelCalibrationMetric.json \
        [--out diagram.png] [--classwise]
"""
import argparse
import json
import os.path as osp
from typing import Optional, Sequence

from calibseg.visualization import plot_classwise_reliability, plot_reliability_diagram


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description='Re-draw reliability diagrams from per-bin JSON statistics')
    parser.add_argument('json_files', nargs='+', help='JSON files written by ReliabilityDiagramHook')
    parser.add_argument('--out', help='output PNG (only with one JSON file); default: beside the JSON')
    parser.add_argument('--classwise', action='store_true', help='also draw the per-class diagrams')
    parser.add_argument('--title', default=None)
    args = parser.parse_args(argv)
    if args.out and len(args.json_files) > 1:
        parser.error('--out needs exactly one JSON file')
    for path in args.json_files:
        if not osp.isfile(path):
            raise FileNotFoundError(f'no such JSON file: {path}')
        with open(path) as f:
            record = json.load(f)
        if 'top_label' not in record:
            raise KeyError(f'{path} is not a calibseg reliability record (no "top_label")')
        out = args.out or osp.splitext(path)[0] + '.png'
        title = args.title or osp.basename(osp.splitext(path)[0])
        print(plot_reliability_diagram(record['top_label'], out, title=title, scalars=record.get('scalars')))
        if args.classwise:
            if not record.get('classwise'):
                raise KeyError(f'{path} holds no classwise statistics')
            print(plot_classwise_reliability(record['classwise'], osp.splitext(out)[0] + '_classwise.png',
                                             title=title))


if __name__ == '__main__':
    main()
