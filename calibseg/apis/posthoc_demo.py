"""The post-hoc calibration demo: fit TS, CTS, VS and LTS to demo models and compare them on held-out images.

Models: by default the cross-entropy and the focal-loss demo runs of ``tools/compare_methods.py``. The focal model,
nearly the same network trained with another loss, is strongly under-confident and shows what the calibrators
correct; it is tested with the CE post-hoc configs, which differ from the focal config only in the training loss
that testing does not use.

Protocols, calibration and test images always disjoint:

* ``generated`` (the post-hoc demo configs): fit on 200 extra images of the demo data's generator with seed 1
  (generated if missing), test on the 41 demo val images, so the uncalibrated row equals the baseline's demo table;
* ``val-half``: the demo val set split by ``HeldOutSplit`` (seed 0), fit on 20 images, test on the other 21
  (derived configs written into the work dir).

Each calibrator is fitted with :func:`calibseg.apis.fit_calibrator` (default options) and the models are evaluated
with mmengine's Runner (:func:`calibseg.apis.test`), as ``tools/test.py`` does.
"""
from __future__ import annotations

import os
import os.path as osp
import platform
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from .experiment import REPO_ROOT, write_marked_section

__all__ = ['CONFIG', 'DEFAULT_CHECKPOINTS', 'PROTOCOLS', 'NAMES', 'run_posthoc_demo', 'run_one', 'table',
           'fitted_summary', 'data_options', 'protocol_config', 'ensure_calibration_images']

CONFIG = 'configs/posthoc/fcn_r18-d16_ce-{}_1xb8-600it_demo-voc12aug-96x96.py'
RUN = 'work_dirs/compare/fcn_r18-d16_{}_1xb8-600it_demo-voc12aug-96x96/iter_600.pth'
DEFAULT_CHECKPOINTS = (RUN.format('ce'), RUN.format('focal'))
PROTOCOLS = ('generated', 'val-half')
NAMES = {'ts': 'TS', 'cts': 'CTS', 'vs': 'VS', 'lts': 'LTS'}
CALIB_IMAGES, CALIB_SEED = 200, 1
# (result key, column title, format)
COLUMNS = (('mIoU', 'mIoU (%)', '{:.2f}'), ('aAcc', 'pixel acc. (%)', '{:.2f}'), ('ECE', 'ECE_15 (%)', '{:.2f}'),
           ('cwCE_15', 'cwCE_15 (%)', '{:.3f}'), ('NLL', 'NLL', '{:.4f}'), ('Brier', 'Brier', '{:.4f}'))
VAL_HALF = """# derived by calibseg.apis.posthoc_demo: fit on half of the demo val set, test on the other half
_base_ = [{base!r}]
calib_dataloader = dict(dataset=dict(_delete_=True, type='HeldOutSplit', dataset={{{{_base_.val_dataloader.dataset}}}},
                                     part='held_out', held_out=0.5, seed=0))
test_dataloader = dict(dataset=dict(_delete_=True, type='HeldOutSplit', dataset={{{{_base_.val_dataloader.dataset}}}},
                                    part='train', held_out=0.5, seed=0))
"""


def ensure_calibration_images(root: str) -> None:
    """Generate the extra calibration images with the demo data's generator (another seed) if absent."""
    if osp.isfile(osp.join(root, 'VOCdevkit', 'VOC2012', 'ImageSets', 'Segmentation', 'val.txt')):
        return
    from ..datasets.demo import generate_demo_data

    print(f'[posthoc_demo] generating {CALIB_IMAGES} calibration images (seed {CALIB_SEED}) in {root}', flush=True)
    generate_demo_data(root, only='voc', voc_train=1, voc_val=CALIB_IMAGES, seed=CALIB_SEED)


def data_options(protocol: str, data_root: str, calib_root: str) -> List[str]:
    """``--cfg-options`` pointing every split of the (derived) post-hoc demo configs at the data.

    Example:
        >>> data_options('generated', 'd', 'c')[-1]
        'test_dataloader.dataset.data_root=d/VOCdevkit/VOC2012'
    """
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
    from mmengine.config import Config

    from .inference import plain_model_cfg
    from .runs import parse_cfg_options, test

    cfg = Config.fromfile(config)
    if calibrator_file is None:
        plain_model_cfg(cfg.model)
    else:
        cfg.model.calibrator.file = calibrator_file
    return test(cfg, checkpoint, work_dir=work_dir, cfg_options=parse_cfg_options(list(options)))


def fitted_summary(calibrator: Any) -> str:
    """The fitted values in a few characters (TS: T; CTS: range of T_k; VS: range of w_k; LTS: T(x))."""
    from ..calibrators import ClasswiseTemperatureScaling, LocalTemperatureScaling, VectorScaling

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
    """The Markdown table of one model and protocol."""
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


def run_one(checkpoint: str, protocol: str, *, methods: Sequence[str], data_root: str, calib_root: str,
            work_dir: str) -> Dict[str, Dict[str, Any]]:
    """Uncalibrated and calibrated test metrics of one model under one protocol."""
    from ..calibrators import load_calibrator
    from .posthoc import fit_calibrator
    from .runs import parse_cfg_options

    model = osp.basename(osp.dirname(checkpoint)) or 'model'
    run_dir = osp.join(work_dir, model, protocol)
    options = data_options(protocol, data_root, calib_root)
    rows: Dict[str, Dict[str, Any]] = {}
    config = protocol_config(methods[0], protocol, work_dir)
    rows['uncalibrated'] = {'test': evaluate(config, checkpoint, osp.join(run_dir, 'uncalibrated'), options, None)}
    for method in methods:
        config = protocol_config(method, protocol, work_dir)
        out = osp.join(run_dir, method, 'calibrator.pth')
        print(f'[posthoc_demo] fit {method} of {checkpoint} ({protocol}) -> {out}', flush=True)
        fit_calibrator(config=config, checkpoint=checkpoint, cfg_options=parse_cfg_options(options), out=out,
                       force=True, meta={'command': f'calibseg.apis.posthoc_demo ({protocol})'})
        calibrator = load_calibrator(out)
        rows[NAMES[method]] = {'test': evaluate(config, checkpoint, osp.join(run_dir, method), options, out),
                               'fit': calibrator.meta.get('fit_metrics'), 'fitted': fitted_summary(calibrator)}
    return rows


def run_posthoc_demo(checkpoints: Optional[Sequence[str]] = None, *, protocols: Sequence[str] = PROTOCOLS,
                     methods: Sequence[str] = ('ts', 'cts', 'vs', 'lts'), data_root: str = 'data/demo',
                     calib_root: str = 'data/demo_calib', work_dir: str = 'work_dirs/posthoc_demo',
                     write: bool = True) -> Dict[str, Dict[str, Dict[str, Dict[str, Any]]]]:
    """Run the demo (module docstring); print the tables and, with ``write``, put them between the results
    markers of ``configs/posthoc/README.md``. Returns ``{checkpoint: {protocol: {row: {'test', 'fit',
    'fitted'}}}}``."""
    if checkpoints is None:
        checkpoints = [c for c in DEFAULT_CHECKPOINTS if osp.isfile(c)]
        for c in sorted(set(DEFAULT_CHECKPOINTS) - set(checkpoints)):
            print(f'[posthoc_demo] skipping {c} (absent: run python tools/compare_methods.py)', flush=True)
    missing = [c for c in checkpoints if not osp.isfile(c)]
    if missing or not checkpoints:
        raise FileNotFoundError(f'checkpoints not found: {missing or list(DEFAULT_CHECKPOINTS)}; train the demo '
                                'models first (python tools/compare_methods.py)')
    if not osp.isdir(osp.join(data_root, 'VOCdevkit')):
        raise FileNotFoundError(f'no demo data in {data_root}: run '
                                '`python tools/dataset_converters/generate_demo_data.py --out data/demo`')
    if 'generated' in protocols:
        ensure_calibration_images(calib_root)
    start = time.time()
    results: Dict[str, Dict[str, Dict[str, Dict[str, Any]]]] = {}
    sections = []
    for checkpoint in checkpoints:
        for protocol in protocols:
            rows = run_one(checkpoint, protocol, methods=methods, data_root=data_root, calib_root=calib_root,
                           work_dir=work_dir)
            results.setdefault(checkpoint, {})[protocol] = rows
            where = (f'fitted on {CALIB_IMAGES} generated calibration images (`calib_dataloader`), tested on the '
                     '41 demo val images' if protocol == 'generated' else
                     'fitted on 20 of the 41 demo val images, tested on the other 21 (`HeldOutSplit`, seed 0)')
            sections.append(f'**`{checkpoint}`**, protocol `{protocol}`: {where}.\n\n{table(rows)}')
    note = (f'Demo FCN ResNetV1c-18 OS16 models of `tools/compare_methods.py` (600 iterations on the embedded demo '
            f'data), calibrators fitted with `tools/fit_calibrator.py`\'s defaults (TS by NLL, CTS/VS by '
            f'L-BFGS on the NLL, LTS by Adam for 10 epochs with the loss after the resize), test metrics from '
            f"mmengine's Runner with every pixel pooled; calibration errors in percent. CPU ({platform.machine()}, "
            f'torch {torch.__version__}). Reproduce: `python tools/posthoc_demo.py` '
            f'({time.time() - start:.0f} s here).\n\n')
    text = note + '\n\n'.join(sections)
    print(text)
    if write:
        write_marked_section(osp.join(REPO_ROOT, 'configs', 'posthoc', 'README.md'), text)
        print('[posthoc_demo] tables written into configs/posthoc/README.md')
    return results
