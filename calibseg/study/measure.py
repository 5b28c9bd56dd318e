"""Measuring one model of a study: fit the temperature on the fit split, then one pass over the test split.

1. **Fit pixels.** One inference pass (:func:`calibseg.apis.iter_seg_logits`, logits at the label resolution) over
   this process's fit images keeps at most ``fit_pixels_per_image`` labelled pixels per image
   (:func:`calibseg.calibrators.select_pixels`, a ``torch.Generator`` seeded with ``(split_seed << 32) + dataset
   index``, so the selection does not depend on the number of processes).
2. **Fit.** :meth:`calibseg.calibrators.TemperatureScaling.fit` on them with ``reduce=sum_across_ranks``: every
   statistic of every pass is summed over the processes, so all of them get the same ``T``.
3. **Test.** ONE pass over the test split accumulates, per pixel, the calibration statistics of the logits
   (``pre``) and of ``logits / T`` (``post``) and mmseg's IoU areas (:meth:`mmseg.evaluation.IoUMetric.
   intersect_and_union`, summed in float64); the fixed-size states are summed across processes, so the row does
   not depend on the number of processes. ``mIoU`` and ``aAcc`` come from mmseg's
   :meth:`~mmseg.evaluation.IoUMetric.total_area_to_metrics` (mean IoU over the classes present in the
   prediction or the labels), unrounded.
4. **Shift** (with ``protocol.corruptions``): the same pass over the test split once per corruption, with
   :class:`~calibseg.datasets.transforms.CorruptImage` right after the image is loaded
   (:func:`calibseg.apis.analyze.corrupted_loader_cfg`) and the ``T`` of step 2 (fitted on clean data); the row gets
   the mean over the corruptions of every :data:`SHIFT_METRICS` key (``shift_<key>``, after TS
   ``post_shift_<key>``) and ``mIoU_drop = mIoU - shift_mIoU`` (mean over corruptions of the clean minus the
   corrupted mIoU).

Memory of the fit: ``fit images * fit_pixels_per_image * (4 K + 8)`` bytes spread over the processes.
"""
from __future__ import annotations

import math
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from calibseg.utils.distributed import StageError, agree, dist_info, sum_across_ranks

from .config import describe_config, load_config, split_loaders
from .models import ModelSpec, checkpoint_iteration
from .protocol import StudyProtocol, ts_options

__all__ = ['measure', 'collect_fit_pixels', 'fit_temperature', 'test_statistics', 'iou_areas',
           'accuracy_metrics', 'harmonic_calibration_score', 'pass_metrics', 'shift_means', 'SHIFT_METRICS',
           'SHIFT_BINS']

Pixels = List[Tuple[torch.Tensor, torch.Tensor]]
#: the keys averaged over the corruptions (``shift_<key>``; the calibration keys also ``post_shift_<key>``)
SHIFT_METRICS = ('mIoU', 'aAcc', 'ECE_15', 'ECE_em_15', 'cwCE_15', 'cwCE_em_15', 'MCE_15', 'RMSCE_15', 'dECE_15',
                 'OE_15', 'UE_15', 'KSCE', 'KDECE', 'MMCE', 'smECE', 'SECE', 'NLL', 'Brier', 'AUROC', 'AURC', 'Acc',
                 'HCS')
#: the bin counts computed under shift (the binned keys of :data:`SHIFT_METRICS` use 15)
SHIFT_BINS = (15,)
_ACCURACY = ('mIoU', 'aAcc')


def _progress(label: str, log_every: int):
    rank, _ = dist_info()
    if not log_every or rank != 0:
        return None
    from calibseg.apis.inference import progress_printer
    return progress_printer(f'[study]   {label}', every=log_every)


def collect_fit_pixels(model, loader, *, num_classes: int, ignore_index: int, max_pixels: int, seed: int,
                       log_every: int = 0) -> Tuple[Pixels, int]:
    """This process's fit pixels, ``[(z (P, K) float32, y (P,) int64)]`` per image with labelled pixels, at most
    ``max_pixels`` per image (0: all); and the number of images this process saw."""
    from calibseg.apis.inference import iter_seg_logits
    from calibseg.calibrators import select_pixels

    batches, images = [], 0
    for item in iter_seg_logits(model, loader, resolution='label', ignore_index=ignore_index,
                                progress=_progress('fit', log_every)):
        _check_logits(item.logits, num_classes, item.meta)
        images += 1
        generator = torch.Generator().manual_seed((seed << 32) + item.index)
        z, y = select_pixels(item.logits, item.labels, ignore_index=ignore_index, max_pixels=max_pixels or None,
                             generator=generator)
        if y.numel():
            batches.append((z.float().contiguous(), y))
    return batches, images


def fit_temperature(batches: Pixels, *, num_classes: int, ts_method: str) -> Dict[str, Any]:
    """``T`` and its fit facts from :class:`~calibseg.calibrators.TemperatureScaling` on the fit pixels of every
    process (statistics summed across processes): ``fit_pixels``, ``T``, ``fit_nll_pre`` (mean NLL at ``T = 1``),
    ``fit_nll_post`` (at ``T``), ``ts_passes``, ``converged`` (the Newton iteration met its tolerance; always
    true for a grid search) and ``T_at_bound`` (``T`` lies at an end of the search range: ``t_min``/``t_max`` or
    the grid's ends, so the best temperature may lie outside it)."""
    from calibseg.calibrators import TemperatureScaling

    ts = TemperatureScaling(num_classes=num_classes, **ts_options(ts_method))
    ts.fit(batches, ignore_index=None, reduce=sum_across_ranks)
    info = ts.fit_info
    if 'grid_nll' in info:
        at_one = min(range(len(ts.grid)), key=lambda i: abs(ts.grid[i] - 1.0))
        nll_pre, converged = info['grid_nll'][at_one], True
        at_bound = info['temperature'] in (min(ts.grid), max(ts.grid))
    else:
        nll_pre, converged = info.get('nll_at_t1', float('nan')), bool(info['converged'])
        at_bound = bool(info['at_bound'])
    return {'fit_pixels': int(info['num_pixels']), 'T': float(info['temperature']), 'fit_nll_pre': float(nll_pre),
            'fit_nll_post': float(info['nll']), 'ts_passes': int(info['passes']), 'converged': converged,
            'T_at_bound': at_bound}


def iou_areas(pred: torch.Tensor, labels: torch.Tensor, *, num_classes: int, ignore_index: int) -> torch.Tensor:
    """``(4, K)`` float64: mmseg's ``IoUMetric.intersect_and_union`` areas (intersection, union, prediction,
    label) of one image."""
    from mmseg.evaluation.metrics import IoUMetric

    areas = IoUMetric.intersect_and_union(pred, labels, num_classes, ignore_index)
    return torch.stack([a.double().cpu() for a in areas])


def accuracy_metrics(areas: torch.Tensor) -> Dict[str, float]:
    """``mIoU`` and ``aAcc`` in percent from summed :func:`iou_areas`, with mmseg's
    ``IoUMetric.total_area_to_metrics`` (the mean ignores classes absent from both prediction and labels)."""
    from mmseg.evaluation.metrics import IoUMetric

    result = IoUMetric.total_area_to_metrics(*areas.view(4, -1), metrics=['mIoU'])
    return {'mIoU': 100.0 * float(np.nanmean(result['IoU'])), 'aAcc': 100.0 * float(result['aAcc'])}


def harmonic_calibration_score(acc_pct: float, ece_pct: float) -> float:
    """``HCS = 2 a (1 - e) / (a + 1 - e)`` (Tao et al., ICLR 2024) of accuracy ``a`` and ECE ``e`` given in
    percent; returned in percent.

    Example:
        >>> round(harmonic_calibration_score(80.0, 10.0), 4)
        84.7059
    """
    a, c = acc_pct / 100.0, 1.0 - ece_pct / 100.0
    return 100.0 * (2 * a * c / (a + c) if a + c > 0 else 0.0)


def _check_logits(logits: torch.Tensor, num_classes: int, meta: dict) -> None:
    if logits.dim() != 3 or logits.shape[0] != num_classes:
        raise ValueError(f'seg_logits of shape {tuple(logits.shape)} in {meta.get("img_path")}: the study needs '
                         f'multi-class logits (K={num_classes}, K >= 2) of shape (K, H, W)')


def test_statistics(model, loader, *, num_classes: int, ignore_index: int, temperature: float, log_every: int = 0):
    """One pass over this process's test images: ``(pre, post, areas, images)`` with the calibration statistics of
    the logits and of ``logits / T``, the summed :func:`iou_areas` and the image count."""
    from calibseg.apis.inference import iter_seg_logits
    from calibseg.functional.calibration import CalibrationStatistics

    def new():
        return CalibrationStatistics(num_classes, input_type='logits', ignore_index=ignore_index, classwise=True)

    pre, post = new(), new()
    areas = torch.zeros(4, num_classes, dtype=torch.float64)
    images = 0
    for item in iter_seg_logits(model, loader, resolution='label', ignore_index=ignore_index,
                                progress=_progress('test', log_every)):
        logits, labels = item.logits, item.labels
        _check_logits(logits, num_classes, item.meta)
        name = item.meta.get('img_path')
        pre.update(logits, labels, name=name)
        post.update(logits / temperature, labels, name=name)
        areas += iou_areas(logits.argmax(0), labels, num_classes=num_classes, ignore_index=ignore_index)
        images += 1
    return pre, post, areas, images


def pass_metrics(pre, post, areas: torch.Tensor, *, bins: Sequence[int]) -> Dict[str, float]:
    """The metrics of one test pass from its summed states: :func:`accuracy_metrics`, every calibration metric of
    the logits (``bins`` for the binned families) and the HCS, then the same of ``logits / T`` prefixed ``post_``."""
    from calibseg.functional.calibration import calibration_metrics

    metrics = accuracy_metrics(areas)
    pre_metrics = calibration_metrics(pre, bins=bins)
    post_metrics = calibration_metrics(post, bins=bins)
    metrics.update(pre_metrics)
    metrics['HCS'] = harmonic_calibration_score(metrics['aAcc'], pre_metrics['ECE_15'])
    metrics.update({f'post_{k}': v for k, v in post_metrics.items()})
    metrics['post_HCS'] = harmonic_calibration_score(metrics['aAcc'], post_metrics['ECE_15'])
    return metrics


def shift_means(clean: Dict[str, float], corrupted: Sequence[Dict[str, float]]) -> Dict[str, float]:
    """The row's shift columns from the clean metrics and one :func:`pass_metrics` dict per corruption:
    ``shift_<k>`` = mean over corruptions of ``k`` for every :data:`SHIFT_METRICS` key, ``post_shift_<k>`` of
    ``post_<k>`` for the calibration keys, and ``mIoU_drop = mIoU - shift_mIoU`` (a NaN in any corruption gives NaN).

    Example:
        >>> out = shift_means({'mIoU': 50.0}, [{'mIoU': 40.0, 'NLL': 1.0, 'post_NLL': 0.5},
        ...                                   {'mIoU': 30.0, 'NLL': 2.0, 'post_NLL': 1.5}])
        >>> out['shift_mIoU'], out['mIoU_drop'], out['post_shift_NLL']
        (35.0, 15.0, 1.0)
    """
    if not corrupted:
        raise ValueError('no corrupted pass to average')
    out: Dict[str, float] = {}
    for key in SHIFT_METRICS:
        names = [key] if key in _ACCURACY else [key, f'post_{key}']
        for name in names:
            if all(name in c for c in corrupted):
                out[f'shift_{name}' if name == key else f'post_shift_{key}'] = \
                    math.fsum(c[name] for c in corrupted) / len(corrupted)
    out['mIoU_drop'] = clean['mIoU'] - out['shift_mIoU']
    return out


def _summed(pre, post, areas: torch.Tensor, counts: Sequence[int]):
    """``(pre state, post state, areas, counts)`` summed over the processes (flat tensors; one collective)."""
    cpu = torch.device('cpu')
    counts = torch.tensor(list(counts), dtype=torch.float64)
    sizes = [pre.state_size, post.state_size, areas.numel(), counts.numel()]
    total = sum_across_ranks(torch.cat([pre.to_tensor(cpu), post.to_tensor(cpu), areas.flatten(), counts]))
    return torch.split(total, sizes)


def _shift_passes(model, test_cfg: dict, protocol: StudyProtocol, *, num_classes: int, temperature: float,
                  num_workers: Optional[int], log_every: int, debug: bool) -> List[tuple]:
    """The summed test states (:func:`_summed`) of the test split under each corruption of ``protocol``, with the
    clean-fitted ``temperature``. Collective: a failure on any process raises on all of them."""
    from calibseg.apis.analyze import corrupted_loader_cfg
    from calibseg.apis.inference import build_dataloader

    out = []
    for corruption in protocol.corruptions:
        error = states = None
        try:
            loader = build_dataloader(corrupted_loader_cfg(test_cfg, corruption, protocol.corruption_severity),
                                      num_workers=num_workers)
            pre, post, areas, images = test_statistics(
                model, loader, num_classes=num_classes, ignore_index=protocol.ignore_index, temperature=temperature,
                log_every=log_every)
            states = (pre, post, areas, images)
        except Exception as err:
            error = err
            if debug:
                traceback.print_exc()
        agree(error, f'shift-pass ({corruption}, severity {protocol.corruption_severity})')
        pre, post, areas, images = states
        out.append(_summed(pre, post, areas, [images]))
    return out


def measure(spec: ModelSpec, protocol: StudyProtocol, *, device: torch.device, weights_only: bool = False,
            num_workers: Optional[int] = None, log_every: int = 0, debug: bool = False
            ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(facts, metrics)`` of one model: what the config, checkpoint and protocol say, and the measured values
    (``metrics`` only on rank 0; empty elsewhere). Collective: every process calls it; a failure on any process
    raises :class:`~calibseg.utils.distributed.StageError` on all of them, naming the stage."""
    from mmengine.config import Config

    from calibseg.apis.inference import build_dataloader, build_model
    from calibseg.functional.calibration import DEFAULT_BINS
    from calibseg.utils.run_setup import check_data_paths

    rank, _ = dist_info()
    error = batches = None
    try:
        cfg = load_config(spec, protocol.cfg_options)
        facts = describe_config(cfg)
        loaders = split_loaders(cfg, protocol)
        for loader_cfg, _ in loaders.values():
            check_data_paths(Config({'val_dataloader': loader_cfg}))
        model = build_model(cfg, spec.checkpoint, device=device, weights_only=weights_only)
        head = getattr(model, 'decode_head', None)
        num_classes = int(getattr(head, 'num_classes', 0))
        if num_classes < 2 or getattr(head, 'out_channels', num_classes) != num_classes:
            raise ValueError('the study handles multi-class decode heads (out_channels == num_classes >= 2) only')
        fit_loader = build_dataloader(loaders['fit'][0], num_workers=num_workers)
        test_loader = build_dataloader(loaders['test'][0], num_workers=num_workers)
        batches, fit_images = collect_fit_pixels(
            model, fit_loader, num_classes=num_classes, ignore_index=protocol.ignore_index,
            max_pixels=protocol.fit_pixels_per_image, seed=protocol.split_seed, log_every=log_every)
    except Exception as err:  # reported once every process has reached this point
        error = err
        if debug:
            traceback.print_exc()
    agree(error, 'load-and-fit-pass')
    try:  # every process runs the same reductions here, so an error is raised on all of them
        ts = fit_temperature(batches, num_classes=num_classes, ts_method=protocol.ts_method)
    except Exception as err:
        raise StageError('fit', f'{type(err).__name__}: {err}') from err
    del batches
    try:
        pre, post, areas, test_images = test_statistics(
            model, test_loader, num_classes=num_classes, ignore_index=protocol.ignore_index, temperature=ts['T'],
            log_every=log_every)
    except Exception as err:
        error = err
        if debug:
            traceback.print_exc()
    agree(error, 'test-pass')
    parts = _summed(pre, post, areas, [fit_images, test_images])
    shift_clock = time.time()
    shifted = _shift_passes(model, loaders['test'][0], protocol, num_classes=num_classes, temperature=ts['T'],
                            num_workers=num_workers, log_every=log_every, debug=debug)
    shift_seconds = time.time() - shift_clock
    iteration = checkpoint_iteration(spec.checkpoint)
    meta = getattr(model, 'checkpoint_meta', None) or {}
    facts['iteration'] = iteration if iteration is not None else meta.get('iter', '')
    facts.update(fit_split=loaders['fit'][1], test_split=loaders['test'][1], ts_method=protocol.ts_method,
                 fit_images=int(parts[3][0]), fit_pixels=ts.pop('fit_pixels'), test_images=int(parts[3][1]),
                 test_pixels=int(parts[0][0]))  # the first scalar of the state: the number of pixels
    facts.update(ts)
    if protocol.corruptions:
        facts.update(shift_corruptions='+'.join(protocol.corruptions), shift_severity=protocol.corruption_severity,
                     shift_seconds=round(shift_seconds, 3))
    if rank != 0:
        return facts, {}
    try:  # rank 0 alone: no collective is pending
        metrics = pass_metrics(pre.from_tensor(parts[0]), post.from_tensor(parts[1]), parts[2], bins=DEFAULT_BINS)
    except Exception as err:
        raise StageError('metrics', f'{type(err).__name__}: {err}') from err
    if not shifted:
        return facts, metrics
    try:
        corrupted = []
        for c_pre, c_post, c_areas, c_counts in shifted:
            if int(c_counts[0]) != facts['test_images']:
                raise RuntimeError(f"a corrupted pass saw {int(c_counts[0])} images, the clean one "
                                   f"{facts['test_images']}")
            corrupted.append(pass_metrics(pre.from_tensor(c_pre), post.from_tensor(c_post), c_areas,
                                          bins=SHIFT_BINS))
        metrics.update(shift_means(metrics, corrupted))
    except Exception as err:
        raise StageError('shift-metrics', f'{type(err).__name__}: {err}') from err
    return facts, metrics
