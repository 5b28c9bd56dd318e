"""Post-hoc calibration of demo models: fit TS, CTS, VS and LTS through the tools and compare on held-out images.

    python tools/posthoc_demo.py [--checkpoints CKPT ...] [--protocols generated val-half]
        [--methods ts cts vs lts] [--data-root data/demo] [--calib-root data/demo_calib]
        [--work-dir work_dirs/posthoc_demo] [--no-write]

Models (``--checkpoints``): by default the cross-entropy and the focal-loss demo runs of
``tools/compare_methods.py`` (``work_dirs/compare/fcn_r18-os16_{ce,focal}_600it_demo-voc12aug-96x96/iter_600.pth``;
a missing default is skipped). The focal model, nearly the same network trained with another loss, is strongly
under-confident and shows what the calibrators correct; it is tested with the CE post-hoc configs, which differ
from the focal config only in the training loss that testing does not use.

Protocols (``--protocols``), calibration and test images always disjoint:

* ``generated`` (the post-hoc demo configs): fit on 200 extra images of the demo data's generator with seed 1
  (``--calib-root``, generated if missing), test on the 41 demo val images, so the uncalibrated row equals the
  baseline's demo table;
* ``val-half``: the demo val set split by ``HeldOutSplit`` (seed 0), fit on 20 images, test on the other 21
  (derived configs written into the work dir).

Each calibrator is fitted with ``tools/fit_calibrator.py`` (a child process, default options) and the models are
evaluated with mmengine's Runner, as ``tools/test.py`` does. The tables go between the results markers of
``configs/posthoc/README.md`` (``--no-write``: print them only).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from calibseg.apis.experiment import REPO_ROOT, write_marked_section

CONFIG = 'configs/posthoc/fcn_r18-os16_ce-{}_600it_demo-voc12aug-96x96.py'
RUN = 'work_dirs/compare/fcn_r18-os16_{}_600it_demo-voc12aug-96x96/iter_600.pth'
DEFAULT_CHECKPOINTS = (RUN.format('ce'), RUN.format('focal'))
PROTOCOLS = ('generated', 'val-half')
NAMES = {'ts': 'TS', 'cts': 'CTS', 'vs': 'VS', 'lts': 'LTS'}
CALIB_IMAGES, CALIB_SEED = 200, 1
# (result key, column title, format)
COLUMNS = (('mIoU', 'mIoU (%)', '{:.2f}'), ('aAcc', 'pixel acc. (%)', '{:.2f}'), ('ECE', 'ECE_15 (%)', '{:.2f}'),
           ('cwCE_15', 'cwCE_15 (%)', '{:.3f}'), ('NLL', 'NLL', '{:.4f}'), ('Brier', 'Brier', '{:.4f}'))
VAL_HALF = """# derived by tools/posthoc_demo.py: fit on half of the demo val set, test on the other half
_base_ = [{base!r}]
calib_dataloader = dict(dataset=dict(_delete_=True, type='HeldOutSplit', dataset={{{{_base_.val_dataloader.dataset}}}},
                                     part='held_out', held_out=0.5, seed=0))
test_dataloader = dict(dataset=dict(_delete_=True, type='HeldOutSplit', dataset={{{{_base_.val_dataloader.dataset}}}},
                                    part='train', held_out=0.5, seed=0))
"""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--checkpoints', nargs='+', default=None,
                        help='demo FCN checkpoints (trusted: written by our own runs); default: the CE and focal '
                             'runs of tools/compare_methods.py')
    parser.add_argument('--protocols', nargs='+', choices=PROTOCOLS, default=list(PROTOCOLS))
    parser.add_argument('--methods', nargs='+', choices=sorted(NAMES), default=['ts', 'cts', 'vs', 'lts'])
    parser.add_argument('--data-root', default='data/demo')
    parser.add_argument('--calib-root', default='data/demo_calib',
                        help=f'calibration images ({CALIB_IMAGES} generated with seed {CALIB_SEED} if missing)')
    parser.add_argument('--work-dir', default='work_dirs/posthoc_demo')
    parser.add_argument('--no-write', action='store_true', help='print the tables only')
    return parser.parse_args(argv)


def ensure_calibration_images(root: str) -> None:
    """Generate the extra calibration images with the demo data's generator (another seed) if absent."""
    if osp.isfile(osp.join(root, 'VOCdevkit', 'VOC2012', 'ImageSets', 'Segmentation', 'val.txt')):
        return
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'generate_demo_data.py'), '--out',
           root, '--only', 'voc', '--voc-train', '1', '--voc-val', str(CALIB_IMAGES), '--seed', str(CALIB_SEED)]
    print(f'[posthoc_demo] {" ".join(cmd)}', flush=True)
    subprocess.run(cmd, check=True)


def data_options(protocol: str, data_root: str, calib_root: str) -> List[str]:
    """``--cfg-options`` pointing every split of the (derived) post-hoc demo configs at the data."""
    voc, calib = (osp.join(r, 'VOCdevkit', 'VOC2012') for r in (data_root, calib_root))
    opts = [f'train_dataloader.dataset.datasets.0.data_root={voc}',
            f'train_dataloader.dataset.datasets.1.data_root={voc}', f'val_dataloader.dataset.data_root={voc}']
    if protocol == 'generated':
        return opts + [f'calib_dataloader.dataset.data_root={calib}', f'test_dataloader.dataset.data_root={voc}']
    return opts + [f'calib_dataloader.dataset.dataset.data_root={voc}',
                   f'test_dataloader.dataset.dataset.data_root={voc}']


def protocol_config(method: str, protocol: str, work_dir: str) -> str:
    """The post-hoc demo config of ``method``, or a derived copy with the val-half split."""
    config = osp.join(REPO_ROOT, CONFIG.format(method))
    if protocol == 'generated':
        return config
    path = osp.join(work_dir, 'configs', osp.basename(config).replace('.py', '_val-half.py'))
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(VAL_HALF.format(base=config))
    return path


def evaluate(config: str, checkpoint: str, work_dir: str, options: Sequence[str],
             calibrator_file: Optional[str]) -> Dict[str, float]:
    """Runner.test() of ``config`` on its test split: calibrated with ``calibrator_file``, or the plain model."""
    from mmengine.config import DictAction
    from mmengine.runner import Runner

    from calibseg.compat import trusted
    from calibseg.utils import load_run_config

    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction, default={})
    cfg = load_run_config(config, work_dir=work_dir, cfg_options=parser.parse_args(['--o', *options]).o)
    if calibrator_file is None:
        cfg.model.pop('calibrator')
        cfg.model.type = 'EncoderDecoder'
    else:
        cfg.model.calibrator.file = calibrator_file
    cfg.load_from = trusted(checkpoint)
    return Runner.from_cfg(cfg).test()


def fitted_summary(calibrator: Any) -> str:
    """The fitted values in a few characters (TS: T; CTS: range of T_k; VS: range of w_k; LTS: T(x))."""
    from calibseg.calibrators import ClasswiseTemperatureScaling, LocalTemperatureScaling, VectorScaling

    if isinstance(calibrator, ClasswiseTemperatureScaling):
        t = calibrator.temperature
        return f'T_k in [{t.min().item():.2f}, {t.max().item():.2f}], median {t.median().item():.2f}'
    if isinstance(calibrator, VectorScaling):
        w = calibrator.weight
        return f'w_k in [{w.min().item():.2f}, {w.max().item():.2f}]'
    if isinstance(calibrator, LocalTemperatureScaling):
        info = calibrator.meta.get('fit_info', {})
        return (f"T(x) mean {info['temperature_mean']:.2f}, range [{info['temperature_min']:.2f}, "
                f"{info['temperature_max']:.2f}]")
    return f'T = {calibrator.temperature.item():.3f}'


def table(rows: Dict[str, Dict[str, Any]]) -> str:
    head = ('| model | ' + ' | '.join(t for _, t, _ in COLUMNS)
            + ' | ECE_15 (%) on the calibration images, before → after | fitted |')
    lines = [head, '|---|' + '---:|' * len(COLUMNS) + '---:|---|']
    for name, row in rows.items():
        res = row['test']
        cells = ['-' if res.get(k) is None else fmt.format(float(res[k])) for k, _, fmt in COLUMNS]
        fit = row.get('fit')
        fit_cell = '-' if not fit else f"{fit['before']['ECE']:.2f} → {fit['after']['ECE']:.2f}"
        lines.append(f'| {name} | ' + ' | '.join(cells) + f" | {fit_cell} | {row.get('fitted', '-')} |")
    return '\n'.join(lines)


def run_one(checkpoint: str, protocol: str, args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """Uncalibrated and calibrated test metrics of one model under one protocol."""
    from calibseg.calibrators import load_calibrator

    model = osp.basename(osp.dirname(checkpoint)) or 'model'
    work_dir = osp.join(args.work_dir, model, protocol)
    options = data_options(protocol, args.data_root, args.calib_root)
    rows: Dict[str, Dict[str, Any]] = {}
    config = protocol_config(args.methods[0], protocol, args.work_dir)
    rows['uncalibrated'] = {'test': evaluate(config, checkpoint, osp.join(work_dir, 'uncalibrated'), options, None)}
    for method in args.methods:
        config = protocol_config(method, protocol, args.work_dir)
        out = osp.join(work_dir, method, 'calibrator.pth')
        cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'fit_calibrator.py'), config, checkpoint, '--out', out,
               '--cfg-options', *options]
        print(f'[posthoc_demo] {" ".join(cmd)}', flush=True)
        subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONUNBUFFERED='1'))
        calibrator = load_calibrator(out)
        rows[NAMES[method]] = {'test': evaluate(config, checkpoint, osp.join(work_dir, method), options, out),
                               'fit': calibrator.meta.get('fit_metrics'), 'fitted': fitted_summary(calibrator)}
    return rows


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Dict[str, Dict[str, Any]]]]:
    args = parse_args(argv)
    checkpoints = args.checkpoints
    if checkpoints is None:
        checkpoints = [c for c in DEFAULT_CHECKPOINTS if osp.isfile(c)]
        for c in sorted(set(DEFAULT_CHECKPOINTS) - set(checkpoints)):
            print(f'[posthoc_demo] skipping {c} (absent: run python tools/compare_methods.py)', flush=True)
    missing = [c for c in checkpoints if not osp.isfile(c)]
    if missing or not checkpoints:
        raise FileNotFoundError(f'checkpoints not found: {missing or list(DEFAULT_CHECKPOINTS)}; train the demo '
                                'models first (python tools/compare_methods.py)')
    if not osp.isdir(osp.join(args.data_root, 'VOCdevkit')):
        raise FileNotFoundError(f'no demo data in {args.data_root}: run '
                                '`python tools/dataset_converters/generate_demo_data.py --out data/demo`')
    if 'generated' in args.protocols:
        ensure_calibration_images(args.calib_root)
    start = time.time()
    results: Dict[str, Dict[str, Dict[str, Dict[str, Any]]]] = {}
    sections = []
    for checkpoint in checkpoints:
        for protocol in args.protocols:
            rows = run_one(checkpoint, protocol, args)
            results.setdefault(checkpoint, {})[protocol] = rows
            where = (f'fitted on {CALIB_IMAGES} generated calibration images (`calib_dataloader`), tested on the '
                     '41 demo val images' if protocol == 'generated' else
                     'fitted on 20 of the 41 demo val images, tested on the other 21 (`HeldOutSplit`, seed 0)')
            sections.append(f'**`{checkpoint}`**, protocol `{protocol}`: {where}.\n\n{table(rows)}')
    note = (f'Demo FCN ResNetV1c-18 OS16 models of `tools/compare_methods.py` (600 iterations on the embedded demo '
            f'data), calibrators fitted with `tools/fit_calibrator.py` (default options: TS by NLL, CTS/VS by '
            f'L-BFGS on the NLL, LTS by Adam for 10 epochs with the loss after the resize), test metrics from '
            f"mmengine's Runner with every pixel pooled; calibration errors in percent. CPU ({platform.machine()}, "
            f'torch {torch.__version__}). Reproduce: `python tools/posthoc_demo.py` '
            f'({time.time() - start:.0f} s here).\n\n')
    text = note + '\n\n'.join(sections)
    print(text)
    if not args.no_write:
        write_marked_section(osp.join(REPO_ROOT, 'configs', 'posthoc', 'README.md'), text)
        print('[posthoc_demo] tables written into configs/posthoc/README.md')
    return results


if __name__ == '__main__':
    main()
