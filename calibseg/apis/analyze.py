"""Analyse the calibration of any mmseg model: where it fails, under which shift, and which post-hoc fix helps.

:func:`analyze_calibration` takes an mmseg config (a file or a packaged name such as
``mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py``, used unchanged) and a checkpoint, runs the
model once over the test split through :func:`~calibseg.apis.iter_seg_logits` and accumulates
:class:`~calibseg.analysis.CalibrationAnalysis` (metrics, per class, per distance band to the nearest label
boundary, per image, the worst images); fits each requested post-hoc calibrator on a split that is not the
evaluated one and evaluates it beside the raw model; optionally repeats the evaluation on corrupted copies of the
test split (:class:`~calibseg.datasets.transforms.CorruptImage`) with the calibrators fitted on clean data; and
writes ``report.md``, its figures and ``results.json`` (:mod:`calibseg.analysis.report`).

**Fit split** (``fit_split``): ``'auto'`` (default) takes the config's ``calib_dataloader`` if it has one, else its
``val_dataloader`` if that reads other data than ``test_dataloader``, else holds out ``held_out`` (20 %) of the test
set with :class:`~calibseg.datasets.HeldOutSplit` and evaluates on the other 80 %. ``'heldout'`` forces the last
option; any other value names a dataloader of the config (``'calib'``, ``'val'``, ``'train'``, ...).

**Processes.** Under torchrun (``launcher='pytorch'``; gloo on CPU, nccl on GPU) every process evaluates its share
of the images and the fixed-size sums are added, so the report is the same as with one process; calibrators are
fitted by process 0 on the whole fit split and sent to the others.

**Shift sweeps resume**: each (corruption, severity) result is written to ``shift/`` as soon as it is computed,
with a fingerprint of the checkpoint, the config and the protocol; ``resume=True`` keeps the ones that match.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import os.path as osp
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..analysis.accumulator import CalibrationAnalysis
from ..utils.distributed import broadcast, dist_info
from ..utils.files import atomic_write_text, file_sha256
from .inference import build_dataloader, build_model, iter_seg_logits, progress_printer

__all__ = ['analyze_calibration', 'load_analysis_config', 'DEFAULT_DISTANCE_BANDS']

DEFAULT_DISTANCE_BANDS = (1, 2, 4, 8, 16, 32)


# ----------------------------------------------------------------------------------------------- config
def load_analysis_config(config: Any, cfg_options: Optional[Dict[str, Any]] = None) -> Any:
    """A config file, an mmseg package config name (``mmseg::path/in/mmseg/configs.py``) or a ``Config``.

    Example:
        >>> cfg = load_analysis_config('mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py',
        ...                            {'test_dataloader.dataset.data_root': 'data/demo/VOCdevkit/VOC2012'})
        >>> cfg.model.decode_head.type, cfg.test_dataloader.dataset.data_root
        ('DepthwiseSeparableASPPHead', 'data/demo/VOCdevkit/VOC2012')
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import calibseg  # noqa: F401  (registration)

    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
    else:
        path = str(config)
        if '::' in path:
            from mmengine.config.utils import _get_external_cfg_base_path, _get_package_and_cfg_path
            from mmengine.utils import get_installed_path

            package, relative = _get_package_and_cfg_path(path)
            path = _get_external_cfg_base_path(get_installed_path(package), relative)
            if not osp.isfile(path):
                raise FileNotFoundError(f'{config}: no such config in the installed {package} package ({path})')
        elif not osp.isfile(path):
            raise FileNotFoundError(f'config not found: {config}')
        cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if not cfg.get('test_dataloader'):
        raise ValueError('the config has no test_dataloader: the analysis evaluates its test split')
    return cfg


def _fit_loader_cfg(cfg: Any, fit_split: str, held_out: float, seed: int):
    """``(fit dataloader config, test dataloader config, description)`` for ``fit_split`` (module docstring)."""
    test_cfg = copy.deepcopy(cfg.test_dataloader)

    def held_out_split() -> tuple:
        fit = copy.deepcopy(test_cfg)
        fit['dataset'] = dict(type='HeldOutSplit', dataset=test_cfg['dataset'], part='held_out', held_out=held_out,
                              seed=seed)
        rest = copy.deepcopy(test_cfg)
        rest['dataset'] = dict(type='HeldOutSplit', dataset=test_cfg['dataset'], part='train', held_out=held_out,
                               seed=seed)
        return fit, rest, f'held-out {held_out:g} of the test set (evaluated on the rest)'

    if fit_split == 'heldout':
        return held_out_split()
    if fit_split == 'auto':
        if cfg.get('calib_dataloader'):
            return copy.deepcopy(cfg.calib_dataloader), test_cfg, 'calib_dataloader'
        val = cfg.get('val_dataloader')
        if val and _dataset_key(val['dataset']) != _dataset_key(test_cfg['dataset']):
            return copy.deepcopy(val), test_cfg, 'val_dataloader'
        return held_out_split()
    key = fit_split if fit_split.endswith('_dataloader') else f'{fit_split}_dataloader'
    if not cfg.get(key):
        known = sorted(str(k) for k in cfg.keys() if str(k).endswith('_dataloader') and cfg.get(k))
        raise ValueError(f'--fit-split {fit_split}: the config has no {key} (it has {known}; or use auto/heldout)')
    if _dataset_key(cfg[key]['dataset']) == _dataset_key(test_cfg['dataset']):
        raise ValueError(f'--fit-split {fit_split}: {key} reads the same data as test_dataloader; a calibrator '
                         'must be fitted on other images (use --fit-split heldout)')
    loader = copy.deepcopy(cfg[key])
    if key == 'train_dataloader':  # fit on the training images as the model sees them at test time
        loader['dataset'] = dict(copy.deepcopy(loader['dataset']),
                                 pipeline=copy.deepcopy(test_cfg['dataset'].get('pipeline', [])))
    return loader, test_cfg, key


def _dataset_key(dataset_cfg: Dict[str, Any]) -> str:
    keep = {k: v for k, v in dict(dataset_cfg).items() if k not in ('pipeline', 'test_mode', 'serialize_data')}
    return json.dumps(_plain(keep), sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def corrupted_loader_cfg(loader_cfg: Dict[str, Any], corruption: str, severity: int) -> Dict[str, Any]:
    """A copy of a test dataloader config with ``CorruptImage`` right after the image is loaded.

    Example:
        >>> cfg = dict(dataset=dict(pipeline=[dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]))
        >>> [t['type'] for t in corrupted_loader_cfg(cfg, 'fog', 2)['dataset']['pipeline']]
        ['LoadImageFromFile', 'CorruptImage', 'PackSegInputs']
    """
    out = copy.deepcopy(dict(loader_cfg))
    dataset = out['dataset']
    while 'pipeline' not in dataset and 'dataset' in dataset:  # wrappers (HeldOutSplit, ...)
        dataset = dataset['dataset']
    pipeline = list(dataset.get('pipeline', []))
    loads = [i for i, t in enumerate(pipeline) if str(t.get('type', '')).startswith('LoadImageFrom')]
    if not loads:
        raise ValueError('the test pipeline has no LoadImageFrom* step to corrupt after')
    pipeline.insert(loads[0] + 1, dict(type='CorruptImage', corruption=corruption, severity=severity))
    dataset['pipeline'] = pipeline
    return out


# ----------------------------------------------------------------------------------------------- passes
def _sequential(loader: Any) -> Any:
    """The same data in one process's order, unsharded (process 0 fits on the whole fit split)."""
    from torch.utils.data import DataLoader, SequentialSampler

    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=SequentialSampler(loader.dataset),
                      collate_fn=loader.collate_fn, num_workers=0)


def _is_affine(calibrator: nn.Module) -> bool:
    """Per-class affine calibrators commute with mmseg's bilinear resizes (LTS depends on the image: no)."""
    from ..calibrators import LocalTemperatureScaling

    return not isinstance(calibrator, LocalTemperatureScaling)


def _rgb_loader(path: str, shape) -> Callable:
    def load():
        import cv2
        import mmcv

        img = mmcv.imread(path, channel_order='rgb')
        if img.shape[:2] != tuple(shape):
            img = cv2.resize(img, (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_AREA)
        return img
    return load


def evaluate_methods(model: nn.Module, loader: Any, calibrators: Dict[str, nn.Module], *, num_classes: int,
                     ignore_index: int, threshold: float, class_names: Sequence[str], distance_bands: Sequence[float],
                     boundary_width: float, worst_k: int, progress_label: str = '', progress_every: int = 50,
                     verbose: bool = True) -> Dict[str, CalibrationAnalysis]:
    """One :class:`CalibrationAnalysis` per method (``'uncalibrated'`` and each calibrator), reduced over processes.

    The raw model and the per-class affine calibrators (TS, CTS, VS, binary TS) share one network pass (their
    calibrated logits at label resolution equal the calibrated segmentor's, since the resizes are linear with
    weights summing to one); local temperature scaling gets a pass of its own through the calibrated segmentor.
    """
    rank, _ = dist_info()

    def analysis(k: int) -> CalibrationAnalysis:
        return CalibrationAnalysis(num_classes=num_classes, ignore_index=ignore_index, threshold=threshold,
                                   distance_bands=distance_bands, boundary_width=boundary_width, worst_k=k,
                                   class_names=class_names)

    out: Dict[str, CalibrationAnalysis] = {'uncalibrated': analysis(worst_k)}
    shared = {name: cal for name, cal in calibrators.items() if _is_affine(cal)}
    for name in calibrators:
        out[name] = analysis(worst_k)
    passes: List[tuple] = [(None, ['uncalibrated'] + list(shared))]
    passes += [(cal, [name]) for name, cal in calibrators.items() if name not in shared]
    for calibrator, names in passes:
        label = f'{progress_label} [{" + ".join(names)}]'
        printer = progress_printer(label, every=progress_every) if verbose and rank == 0 else None
        for item in iter_seg_logits(model, loader, calibrator=calibrator, ignore_index=ignore_index,
                                    progress=printer):
            path = str(item.meta.get('img_path', ''))
            image = _rgb_loader(path, item.labels.shape) if path and worst_k else None
            for name in names:
                logits = item.logits
                if calibrator is None and name != 'uncalibrated':
                    with torch.no_grad():
                        logits = shared[name](logits[None].float())[0]
                out[name].update(logits, item.labels, index=item.index, img_path=path, image=image)
    for result in out.values():
        result.reduce()
    return {name: out[name] for name in ['uncalibrated'] + list(calibrators)}


def fit_calibrators(model: nn.Module, loader: Any, methods: Sequence[str], *, device: str, seed: int,
                    max_pixels_per_image: int, verbose: bool = True) -> Dict[str, Dict[str, Any]]:
    """Fit each method on ``loader`` in process 0 (whole split) and send the fitted calibrators to the others."""
    from .posthoc import fit_calibrator

    rank, world = dist_info()
    fitted: Dict[str, Dict[str, Any]] = {}
    for method in methods:
        payload = None
        if rank == 0:
            start = time.time()
            printer = progress_printer(f'[analyze] fit {method}', every=50) if verbose else None
            result = fit_calibrator(method, model=model, dataloader=_sequential(loader) if world > 1 else loader,
                                    max_pixels_per_image=max_pixels_per_image, seed=seed, device=device,
                                    progress=printer)
            payload = dict(calibrator=result['calibrator'].cpu(), seconds=time.time() - start,
                           num_images=result.get('num_images'), method=result.get('method'))
        payload = broadcast(payload)  # our own processes: the fitted module itself
        calibrator = payload['calibrator'].to(device).eval()
        fitted[method] = dict(calibrator=calibrator, seconds=payload['seconds'], num_images=payload['num_images'],
                              method=payload['method'], parameters=_parameters(calibrator))
    return fitted


def _parameters(calibrator: nn.Module) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    temperature = getattr(calibrator, 'temperature', None)
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.detach()
    if isinstance(temperature, torch.Tensor) and temperature.numel() == 1:
        out['temperature'] = float(temperature)
    elif isinstance(temperature, torch.Tensor):
        out['temperature_mean'] = float(temperature.float().mean())
    elif isinstance(temperature, (int, float)):
        out['temperature'] = float(temperature)
    return out


# ----------------------------------------------------------------------------------------------- files
def _check_out_dir(out_dir: str, *, force: bool, resume: bool, inputs: Sequence[str]) -> None:
    out = osp.abspath(out_dir)
    for path in inputs:
        if path and osp.exists(path) and osp.commonpath([out, osp.abspath(path)]) == out:
            raise ValueError(f'--out {out_dir} contains the input {path}: choose another output directory')
    existing = [name for name in ('report.md', 'results.json', 'shift') if osp.exists(osp.join(out_dir, name))]
    if existing and not (force or resume):
        raise FileExistsError(f'{out_dir} already holds an analysis ({", ".join(existing)}): pass --resume to '
                              'continue it (finished shift results are kept) or --force to redo everything')


# ----------------------------------------------------------------------------------------------- main entry
def analyze_calibration(config: Any, checkpoint: str, *, out_dir: str, cfg_options: Optional[Dict[str, Any]] = None,
                        calibrators: Sequence[str] = (), fit_split: str = 'auto', held_out: float = 0.2,
                        boundary_width: float = 2, distance_bands: Sequence[float] = DEFAULT_DISTANCE_BANDS,
                        worst_k: int = 6, corruptions: Sequence[str] = (), severities: Sequence[int] = (1, 3, 5),
                        launcher: str = 'none', device: Optional[str] = None, weights_only: bool = False,
                        max_pixels_per_image: int = 10000, seed: int = 0, force: bool = False,
                        resume: bool = False, verbose: bool = True) -> Dict[str, Any]:
    """Analyse a segmentor's calibration and write ``report.md``, figures and ``results.json`` into ``out_dir``.

    Args:
        config: config file, ``mmseg::...`` package config name, or ``Config``; used unchanged apart from
            ``cfg_options``.
        checkpoint: the model's weights (loaded as a trusted file unless ``weights_only``).
        out_dir: output directory (refused if it holds an analysis, unless ``force`` or ``resume``).
        calibrators: post-hoc methods to fit and compare (``ts``, ``cts``, ``vs``, ``lts``; ``ts``/``tsb`` for
            one-channel heads).
        fit_split: where the calibrators are fitted (module docstring); ``held_out``: its fraction for
            ``'heldout'``.
        boundary_width: pixels within this distance of a label boundary are *boundary* pixels.
        distance_bands: edges (pixels) of the distance bands of the boundary curve (must include
            ``boundary_width``).
        worst_k: images in the gallery of the worst-calibrated images.
        corruptions: names (or ``'all'``, or family names) of corruptions to evaluate under.
        severities: severities (1–5) of each corruption.
        launcher: ``'none'`` or ``'pytorch'`` (torchrun).
        device: ``'cpu'``/``'cuda'`` (default: the current CUDA device if available).
        weights_only: load the checkpoint with torch's safe loader.
        max_pixels_per_image: labelled pixels per image used for fitting the calibrators.
        seed: seed of the pixel subsampling and of the held-out split.
        force, resume: see ``out_dir`` and the module docstring.
        verbose: progress lines on process 0.

    Returns:
        The ``results.json`` content (every number of the report).

    Example::

        >>> analyze_calibration('configs/baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py',  # doctest: +SKIP
        ...                     'work_dirs/ce/iter_600.pth', out_dir='analysis/ce', calibrators=['ts', 'lts'])
    """
    from ..analysis.report import write_report
    from ..datasets.transforms.corruptions import check_severity, valid_corruptions
    from ..utils.run_setup import check_data_paths

    corruptions = valid_corruptions(list(corruptions)) if corruptions else []
    severities = sorted({check_severity(s) for s in severities}) if corruptions else []
    distance_bands = sorted(float(e) for e in distance_bands)
    if float(boundary_width) not in distance_bands:
        distance_bands = sorted(set(distance_bands) | {float(boundary_width)})
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    cfg = load_analysis_config(config, cfg_options)
    _check_out_dir(out_dir, force=force, resume=resume,
                   inputs=[checkpoint] + ([str(config)] if isinstance(config, str) else []))
    if launcher == 'pytorch':
        from ..compat import setup_distributed

        setup_distributed(cfg, launcher)
    elif launcher != 'none':
        raise ValueError(f"launcher must be 'none' or 'pytorch', got {launcher!r}")
    rank, world = dist_info()
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if device == 'cuda' and world > 1:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    fit_cfg, test_cfg, fit_desc = _fit_loader_cfg(cfg, fit_split, held_out, seed) if calibrators else (
        None, copy.deepcopy(cfg.test_dataloader), None)
    check_data_paths(cfg, loaders=['test_dataloader'] + ([] if fit_cfg is None or fit_desc.startswith('held')
                                                         else [fit_desc]))
    start = time.time()
    model = build_model(cfg, checkpoint, device=device, weights_only=weights_only, plain=True)
    head = model.decode_head
    channels = int(head.out_channels)
    ignore_index = int(getattr(head, 'ignore_index', 255))
    threshold = float(getattr(head, 'threshold', None) or 0.5)
    test_loader = build_dataloader(test_cfg)
    class_names = _class_names(model, test_loader, channels)
    log = print if verbose and rank == 0 else (lambda *a, **k: None)
    log(f'[analyze] {osp.basename(str(config))}: {channels} channel(s), {len(test_loader.dataset)} test images, '
        f'{world} process(es), device {device}')

    fitted: Dict[str, Dict[str, Any]] = {}
    if calibrators:
        log(f'[analyze] fitting {", ".join(calibrators)} on {fit_desc}')
        fitted = fit_calibrators(model, build_dataloader(fit_cfg), calibrators, device=device, seed=seed,
                                 max_pixels_per_image=max_pixels_per_image, verbose=verbose)
    options = dict(num_classes=channels, ignore_index=ignore_index, threshold=threshold, class_names=class_names,
                   distance_bands=distance_bands, boundary_width=float(boundary_width), verbose=verbose)
    cal_modules = {name: f['calibrator'] for name, f in fitted.items()}
    clean = evaluate_methods(model, test_loader, cal_modules, worst_k=worst_k, progress_label='[analyze] clean',
                             **options)
    clean_seconds = time.time() - start
    results: Dict[str, Any] = dict(
        config=str(config), checkpoint=checkpoint, num_classes=channels, binary=channels == 1,
        ignore_index=ignore_index, class_names=class_names, test_images=len(test_loader.dataset) if world == 1
        else sum(1 for _ in clean['uncalibrated'].images), fit_split=fit_desc, processes=world,
        boundary_width=float(boundary_width), distance_bands=distance_bands,
        calibrators={name: dict(method=f['method'], fit_images=f['num_images'], fit_seconds=f['seconds'],
                                **f['parameters']) for name, f in fitted.items()},
        methods={name: a.results() for name, a in clean.items()})
    shift: Dict[str, Any] = {}
    if corruptions:
        shift = _shift_sweep(model, test_cfg, cal_modules, corruptions, severities, out_dir=out_dir,
                             fingerprint=_fingerprint(cfg, checkpoint, calibrators, fit_desc, options, seed),
                             resume=resume and not force, options=options, log=log)
        results['shift'] = shift
    results['seconds'] = dict(clean=clean_seconds, total=time.time() - start)
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
        worst = {name: a.worst_images() for name, a in clean.items()}
        write_report(results, out_dir, worst=worst)
        atomic_write_text(osp.join(out_dir, 'results.json'), json.dumps(_finite(results), indent=1, sort_keys=False))
        log(f'[analyze] wrote {osp.join(out_dir, "report.md")} and results.json in {time.time() - start:.0f} s')
    return results


def _class_names(model: nn.Module, loader: Any, channels: int) -> List[str]:
    if channels == 1:
        return ['background', 'foreground']
    meta = getattr(model, 'checkpoint_meta', None) or {}
    classes = (meta.get('dataset_meta') or {}).get('classes') or getattr(loader.dataset, 'metainfo', {}).get(
        'classes')
    if classes and len(classes) == channels:
        return [str(c) for c in classes]
    return [str(k) for k in range(channels)]


def _fingerprint(cfg: Any, checkpoint: str, calibrators: Sequence[str], fit_desc: Optional[str],
                 options: Dict[str, Any], seed: int) -> str:
    data = dict(checkpoint=file_sha256(checkpoint), test=_plain(dict(cfg.test_dataloader)),
                model=_plain(dict(cfg.model)), calibrators=list(calibrators), fit=fit_desc, seed=seed,
                options={k: v for k, v in options.items() if k != 'verbose'})
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _shift_sweep(model: nn.Module, test_cfg: Dict[str, Any], calibrators: Dict[str, nn.Module],
                 corruptions: Sequence[str], severities: Sequence[int], *, out_dir: str, fingerprint: str,
                 resume: bool, options: Dict[str, Any], log: Callable) -> Dict[str, Any]:
    """Evaluate every (corruption, severity); each cell is stored in ``out_dir/shift`` as soon as it is done."""
    rank, _ = dist_info()
    folder = osp.join(out_dir, 'shift')
    if rank == 0:
        os.makedirs(folder, exist_ok=True)
    cells = [(c, s) for c in corruptions for s in severities]
    out: Dict[str, Any] = {}
    start = time.time()
    done_here = 0
    for i, (corruption, severity) in enumerate(cells):
        path = osp.join(folder, f'{corruption}-s{severity}.json')
        cached = None
        if resume and rank == 0 and osp.isfile(path):
            try:
                with open(path, encoding='utf-8') as f:
                    record = json.load(f)
                if record.get('fingerprint') == fingerprint:
                    cached = record['methods']
            except (OSError, ValueError, KeyError):
                cached = None  # an unreadable cell is recomputed
        cached = broadcast(cached)
        if cached is not None:
            out.setdefault(corruption, {})[str(severity)] = cached
            continue
        left = ''
        if done_here:
            per_cell = (time.time() - start) / done_here
            left = f', about {per_cell * (len(cells) - i) / 60:.1f} min left'
        log(f'[analyze] shift {i + 1}/{len(cells)}: {corruption} severity {severity}{left}')
        loader = build_dataloader(corrupted_loader_cfg(test_cfg, corruption, severity))
        analyses = evaluate_methods(model, loader, calibrators, worst_k=0,
                                    progress_label=f'[analyze] {corruption}-{severity}',
                                    **dict(options, verbose=False))
        methods = {name: dict(headline=a.headline(), boundary=a.boundary()) for name, a in analyses.items()}
        methods = _finite(methods)
        if rank == 0:
            atomic_write_text(path, json.dumps(dict(fingerprint=fingerprint, corruption=corruption, severity=severity,
                                               methods=methods), indent=1))
        out.setdefault(corruption, {})[str(severity)] = methods
        done_here += 1
    return out


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become ``None``."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
