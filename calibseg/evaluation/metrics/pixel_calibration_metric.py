"""Per-pixel calibration metrics for mmseg's val/test loops, exact and in bounded memory on 1 or N processes.

The per-sample update of the pooled metrics reads nothing back to the host, so it never stalls a GPU pipeline:
the statistics stay on the device of ``seg_logits``, and value problems (NaN/inf scores, labels outside
``[0, K)`` that are not ``ignore_index``, probabilities outside ``[0, 1]`` or not summing to 1) are counted on
the device and raised by ``evaluate()`` with the first offending sample's ``img_path`` (the offending pixels are
left out meanwhile). Exceptions: ``aggregation='per_image'`` computes every image's metrics (so it reads each
image's values back and raises at once), ``boundary_width``/``distance_bands`` compute label-boundary distances
with OpenCV on the CPU, and :class:`BinaryCalibrationMetric` looks for unconverted 0/255 masks per sample.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, print_log
from mmseg.registry import METRICS

from ...functional.calibration import (
    DEFAULT_BINS,
    DEFAULT_GRID,
    METRIC_FAMILIES,
    BinaryCalibrationStatistics,
    CalibrationStatistics,
    calibration_metrics,
    classwise_table,
    reliability_bins,
)
from ...functional.calibration.inputs import PROBLEM_FIELDS, describe_problems, merge_problems
from ...functional.calibration.parallel import one_thread, release_buffers
from ...functional.calibration.spatial import SpatialCalibrationStatistics, band_values
from ...utils.distributed import dist_info, sum_across_ranks
from ..message_keys import RELIABILITY_INFO_PREFIX
from .stream_state import PaddingAwareAccumulator

__all__ = ['PixelCalibrationMetric', 'BinaryCalibrationMetric']

AGGREGATIONS = ('pooled', 'per_image')
#: families of the default (headline) keys; ``metrics='all'`` computes every family at every bin count
HEADLINE_FAMILIES = ('ECE', 'ECE_em', 'cwCE', 'MCE', 'OE', 'UE', 'smECE', 'NLL', 'Brier', 'AUROC', 'FPR95', 'Acc')
SPATIAL_BINS = 15
BOUNDARY_KEYS = (f'boundary_ECE_{SPATIAL_BINS}', 'boundary_Acc', 'boundary_frac', f'interior_ECE_{SPATIAL_BINS}',
                 'interior_Acc')


class _CalibrationMetricBase(BaseMetric):
    """Shared machinery: per-sample statistics, padding removal, cross-rank merge, publication for the hook.

    Instead of mmengine's list of per-sample results, each rank sums fixed-size float64 statistics
    (:class:`~calibseg.functional.calibration.CalibrationStatistics`) and ``evaluate`` all-reduces them, so memory
    does not grow with the number of images or pixels and the result does not depend on the number of processes.
    """

    binary = False
    headline_bins = 15

    def __init__(self, *, ignore_index: int = 255, bins: Sequence[int] = DEFAULT_BINS,
                 aggregation: str = 'pooled', metrics: Union[None, str, Sequence[str]] = None,
                 input_type: str = 'logits', reliability_bins: int = 15, boundary_width: Optional[float] = None,
                 distance_bands: Optional[Sequence[float]] = None, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f'aggregation must be one of {AGGREGATIONS}, got {aggregation!r}')
        if isinstance(metrics, str) and metrics != 'all':
            raise ValueError(f"metrics must be None (headline keys), 'all' or a list of families, got {metrics!r}")
        self.metrics_mode = 'headline' if metrics is None else 'all' if metrics == 'all' else 'families'
        metrics = None if self.metrics_mode != 'families' else list(metrics)
        self.boundary_width, self.distance_bands = _check_spatial(boundary_width, distance_bands, aggregation)
        bins = tuple(int(b) for b in bins)
        base = DEFAULT_GRID.base_cells
        if not bins or any(b < 1 or base % b for b in bins):
            raise ValueError(f'bins must be positive divisors of {base} (exact equal-width bins), got {bins}')
        if int(reliability_bins) < 1 or base % int(reliability_bins):
            raise ValueError(f'reliability_bins must divide {base}, got {reliability_bins}')
        unknown = sorted(set(metrics or ()) - set(METRIC_FAMILIES))
        if unknown:
            raise ValueError(f'unknown metric families {unknown}; choose from {list(METRIC_FAMILIES)}')
        self.ignore_index = int(ignore_index)
        self.bins = bins
        self.aggregation = aggregation
        self.metric_families = None if metrics is None else list(metrics)
        self.input_type = input_type
        self.reliability_bins = int(reliability_bins)
        self._accumulator = PaddingAwareAccumulator(self._add)
        self._scratch: List[CalibrationStatistics] = []
        self._running: Optional[tuple] = None  # one process: (statistics, spatial statistics or None) so far
        self._before_last: Optional[tuple] = None  # their state before the last sample (a padding duplicate?)
        self._num_running = 0
        self._reset_problems()
        self._keys: Optional[List[str]] = None
        self._new_statistics(num_classes=3)  # fail now, not after the first val epoch, on a bad input_type
        self._spatial_edges = sorted(set(([self.boundary_width] if self.boundary_width is not None else [])
                                         + list(self.distance_bands or ())))

    # ------------------------------------------------------------------ hooks for subclasses
    def _new_statistics(self, num_classes: int, device: Union[str, torch.device] = 'cpu') -> CalibrationStatistics:
        raise NotImplementedError

    def _sample_tensors(self, data_sample: dict):
        """``(seg_logits, label map (H, W))`` of one data sample, with a clear error when either is missing."""
        try:
            scores = data_sample['seg_logits']['data']
            labels = data_sample['gt_sem_seg']['data']
        except KeyError as err:
            raise KeyError(f'{type(self).__name__} needs `seg_logits` and `gt_sem_seg` in each data sample; '
                           f'missing {err} in {data_sample.get("img_path", "a sample")}') from None
        return scores, labels[0] if labels.dim() == 3 else labels

    def _num_classes(self) -> int:
        raise NotImplementedError

    def _new_spatial(self, num_classes: int) -> Optional[SpatialCalibrationStatistics]:
        """Distance-band statistics when ``boundary_width`` or ``distance_bands`` is set, else ``None``."""
        if not self._spatial_edges:
            return None
        return SpatialCalibrationStatistics(
            self._spatial_edges, num_classes=num_classes, input_type=self.input_type, binary=self.binary,
            threshold=getattr(self, 'threshold', 0.5), ignore_index=self.ignore_index,
            exclude_background=getattr(self, 'exclude_background', False), n_bins=SPATIAL_BINS)

    def _class_names(self) -> List[str]:
        classes = (self.dataset_meta or {}).get('classes')
        return list(classes) if classes else [str(k) for k in range(self._num_classes())]

    # ------------------------------------------------------------------ statistics
    @staticmethod
    def _add(total, sample):
        """Sum ``(statistics, spatial statistics or None)`` pairs (pooled) or per-image value vectors
        (per_image); ``None`` adds nothing. The pooled samples are reused scratch objects: the total copies."""
        if sample is None:
            return total
        if isinstance(sample, tuple):
            if total is None:
                return tuple(s.copy() if s is not None else None for s in sample)
            return tuple(t.merge(s) if t is not None else None for t, s in zip(total, sample))
        if total is None:
            return sample
        return total + sample

    def _scratch_statistics(self, device: torch.device) -> CalibrationStatistics:
        """A zeroed statistics object on ``device`` for the next sample: two are reused in turn (the previous
        sample's is still pending in the accumulator, the one before was merged into the total)."""
        k = self._num_classes()
        scratch = self._scratch
        if len(scratch) < 2 or scratch[0].device != device or scratch[0].num_classes != k:
            scratch[:] = [self._new_statistics(k, device) for _ in range(2)]
        scratch.reverse()
        return scratch[0].reset()

    def _running_statistics(self, device: torch.device) -> tuple:
        """The running ``(statistics, spatial statistics or None)`` of a single process, created on ``device``,
        after keeping a copy of their state (the next sample may be one past the dataset size).

        In one process every sample is added straight into the total (one copy of the state per sample instead
        of clearing and merging per-sample statistics); with several, :class:`PaddingAwareAccumulator` keeps each
        rank's last sample aside."""
        if self._running is None or self._running[0].device != device:
            if self._running is not None:  # scores moved to another device: carry the sums over
                stats, spatial = self._running
                self._running = (self._new_statistics(stats.num_classes, device).merge(stats), spatial)
            else:
                k = self._num_classes()
                self._running = (self._new_statistics(k, device), self._new_spatial(k))
            self._before_last = None
        stats, spatial = self._running
        both = stats._state_and_problems()
        if self._before_last is None or self._before_last[0].shape != both.shape:
            self._before_last = (torch.empty_like(both), None)
        self._before_last[0].copy_(both)
        self._before_last = (self._before_last[0], spatial.copy() if spatial is not None else None)
        self._num_running += 1
        return self._running

    def _finish_running(self, size: int) -> Optional[tuple]:
        """The running total without a last sample past the dataset ``size`` (as the padding rule drops it)."""
        if self._running is None:
            return None
        stats, spatial = self._running
        if self._num_running > size:
            stats._state_and_problems().copy_(self._before_last[0])
            spatial = self._before_last[1]
        return stats, spatial

    # ------------------------------------------------------------------ deferred value checks
    def _reset_problems(self) -> None:
        self._problems = None  # merged problem vector of the pooled samples (on their device)
        self._first_bad: Optional[torch.Tensor] = None  # index of the first sample with a problem, -1 if none
        self._names: List[Optional[str]] = []

    @staticmethod
    def _problem_total(problems: torch.Tensor) -> torch.Tensor:
        """The number of problem pixels of a problem vector, as a device scalar."""
        return problems[0:2].sum() + problems[4] + problems[7]

    def _note_problems(self, stats: CalibrationStatistics, name: Optional[str],
                       before: Optional[torch.Tensor] = None) -> None:
        """Remember the first sample with value problems (device operations only, no readback): ``stats`` holds
        this sample alone (its problems are merged into the metric's), or the running total whose problem count
        was ``before`` this sample."""
        problems = stats._problems
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=problems.device)
        if before is None:
            if self._problems is None:
                self._problems = problems.clone()
            else:
                merge_problems(self._problems, problems)
            bad = self._problem_total(problems) > 0
        else:
            bad = self._problem_total(problems) > before
        self._first_bad.masked_fill_(bad & (self._first_bad < 0), len(self._names))
        self._names.append(name)

    def _problem_vector(self) -> Optional[torch.Tensor]:
        """The merged problem vector of the pooled samples so far (``None`` before the first)."""
        return self._running[0]._problems if self._running is not None else self._problems

    def _problem_counts(self) -> torch.Tensor:
        """``(4,)`` float64 counts of the problems kept so far (zeros when none), on the CPU."""
        p = self._problem_vector()
        if p is None:
            return torch.zeros(4, dtype=torch.float64)
        return torch.stack([p[0], p[1], p[4], p[7]]).cpu()

    def _raise_problems(self, counts: torch.Tensor) -> None:
        """Raise the deferred value problems (``counts`` summed over the ranks) as one readable error."""
        if not bool((counts > 0).any()):
            return
        vector = self._problem_vector()
        local = vector.tolist() if vector is not None else [0.0] * len(PROBLEM_FIELDS)
        first = int(self._first_bad) if self._first_bad is not None else -1
        words = describe_problems(local, num_classes=self._num_classes(), ignore_index=self.ignore_index,
                                  input_type=self.input_type)
        where = (f' (first in sample {first}: {self._names[first]})' if first >= 0 and self._names[first] else
                 f' (first in sample {first})' if first >= 0 else ' (on another process)')
        total = int(counts.sum())
        detail = '; '.join(words) if words else f'{total} evaluated pixel(s) with invalid values'
        raise ValueError(f'{type(self).__name__}: {detail}{where}. These pixels were left out of the statistics; '
                         'fix the data, the ignore_index or the input_type (statistics.update() without '
                         'defer_checks lists the offending values of a sample)')

    def _compute(self, stats: CalibrationStatistics) -> Dict[str, float]:
        if self.metrics_mode == 'headline':
            b = self.headline_bins
            values = calibration_metrics(stats, metrics=HEADLINE_FAMILIES, bins=(b,))
            return {k: values[k] for k in self.headline_keys()}
        return calibration_metrics(stats, metrics=self.metric_families, bins=self.bins)

    def headline_keys(self) -> Tuple[str, ...]:
        """The default result keys (before the spatial ones), in order."""
        b = self.headline_bins
        return ('ECE', f'ECE_em_{b}', f'cwCE_{b}', f'MCE_{b}', f'OE_{b}', f'UE_{b}', 'smECE', 'NLL', 'Brier',
                'AUROC', 'FPR95', 'Acc')

    def _result_keys(self) -> List[str]:
        """The result keys, in order, whatever the data (computed once on two synthetic pixels)."""
        if self._keys is None:
            k = self._num_classes()
            probe = self._new_statistics(k)
            if self.binary:
                probe.update(torch.tensor([[0.3, 0.8]]), torch.tensor([[0, 1]]))
            else:  # (K, 1, 2): one-hot pixels of classes 0 and 1, valid as probabilities and as logits
                probe.update(torch.eye(k)[:, :2].reshape(k, 1, 2), torch.tensor([[0, 1]]))
            self._keys = list(self._compute(probe))
        return self._keys

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Reduce each sample's ``seg_logits`` and ``gt_sem_seg`` to statistics (no per-pixel state kept).

        Pooled statistics are accumulated on the scores' device without any readback (value problems are
        raised by :meth:`evaluate`); ``per_image`` computes (and checks) every image at once.
        """
        for data_sample in data_samples:
            inputs, labels = self._sample_tensors(data_sample)
            name = data_sample.get('img_path', None)
            if self.aggregation == 'per_image':
                stats = self._new_statistics(self._num_classes())
                stats.update(inputs, labels, name=name)
                self._accumulator.push(self._per_image_record(stats))
            elif dist_info()[1] == 1:
                stats, spatial = self._running_statistics(inputs.device)
                before = self._problem_total(stats._problems)
                stats.update(inputs, labels, name=name, defer_checks=True)
                self._note_problems(stats, name, before)
                if spatial is not None:
                    spatial.update(inputs, labels, name=name)
            else:
                stats = self._scratch_statistics(inputs.device)
                stats.update(inputs, labels, name=name, defer_checks=True)
                self._note_problems(stats, name)
                spatial = self._new_spatial(self._num_classes())
                if spatial is not None:
                    spatial.update(inputs, labels, name=name)
                self._accumulator.push((stats, spatial))
        # mmengine warns when `results` stays empty; one marker per batch keeps it quiet at no cost
        self.results.append(None)

    def _per_image_record(self, stats: CalibrationStatistics) -> Optional[torch.Tensor]:
        """An image's metric values as a vector ``[1, v_1, ..., v_m]``; ``None`` without valid pixels."""
        if stats.num_pixels == 0:
            return None
        values = self._compute(stats)
        return torch.tensor([1.0] + [values[k] for k in self._result_keys()], dtype=torch.float64)

    # ------------------------------------------------------------------ evaluation
    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Unused: :meth:`evaluate` merges fixed-size statistics instead of mmengine's per-sample results."""
        raise NotImplementedError('calibseg calibration metrics are computed by evaluate()')

    def evaluate(self, size: int) -> dict:
        """Merge the statistics of every rank (without padding duplicates) and compute the metrics."""
        total = self._accumulator.finish(size)
        if self._running is not None:
            total = self._finish_running(size)
        self._accumulator.reset()
        self._scratch.clear()
        self.results.clear()
        release_buffers()  # the statistics' scratch buffers, until the next evaluation
        try:
            with one_thread():  # thousands of small operations on the cells
                if self.aggregation == 'per_image':
                    metrics = self._evaluate_per_image(total)
                else:
                    metrics = self._evaluate_pooled(total)
        finally:
            self._running = self._before_last = None
            self._num_running = 0
            self._reset_problems()
        if self.prefix:
            metrics = {f'{self.prefix}/{k}': v for k, v in metrics.items()}
        return metrics

    def _evaluate_pooled(self, total: Optional[tuple]) -> Dict[str, float]:
        k = self._num_classes()
        stats, spatial = total if total is not None else (self._new_statistics(k), self._new_spatial(k))
        stats = self._new_statistics(k).from_tensor(stats.to_tensor('cpu'))  # evaluated on the CPU
        parts = [stats.to_tensor(), self._problem_counts()] + ([spatial.to_tensor()] if spatial is not None else [])
        merged = sum_across_ranks(torch.cat(parts))  # one collective for all
        n_problems = 4
        self._raise_problems(merged[stats.state_size:stats.state_size + n_problems])
        stats = stats.from_tensor(merged[:stats.state_size])
        if spatial is not None:
            spatial = spatial.from_tensor(merged[stats.state_size + n_problems:])
        if stats.num_pixels == 0:
            raise ValueError(f'{type(self).__name__}: no valid pixel in the whole evaluation (every label is '
                             f'ignore_index={self.ignore_index}, or nothing was processed)')
        metrics = self._compute(stats)
        if spatial is not None and self.boundary_width is not None:
            metrics.update(self._boundary_metrics(spatial))
        self._publish(stats, metrics, spatial)
        return metrics

    def _boundary_metrics(self, spatial: SpatialCalibrationStatistics) -> Dict[str, float]:
        """``boundary_*`` (distance <= w) and ``interior_*`` keys; NaN (with a warning) for an empty side."""
        w = self.boundary_width
        inner, outer = spatial.collapse([w])
        total = float(spatial.band_counts().sum())
        out: Dict[str, float] = {}
        for side, band in (('boundary', inner), ('interior', outer)):
            values = band_values(band)
            if values['ECE'] is None:
                reason = (f'no evaluated pixel lies within boundary_width={w} px of a label boundary (no label map '
                          'has a boundary pixel near an evaluated one)' if side == 'boundary' else
                          f'every evaluated pixel lies within boundary_width={w} px of a label boundary')
                print_log(f'{type(self).__name__}: {reason}; {side}_ECE_{SPATIAL_BINS} and {side}_Acc are NaN',
                          logger='current', level=logging.WARNING)
            out[f'{side}_ECE_{SPATIAL_BINS}'] = math.nan if values['ECE'] is None else values['ECE']
            out[f'{side}_Acc'] = math.nan if values['accuracy'] is None else values['accuracy']
            if side == 'boundary':
                out['boundary_frac'] = 100.0 * float(band[0].sum()) / total
        return {k: out[k] for k in BOUNDARY_KEYS}

    def _evaluate_per_image(self, total: Optional[torch.Tensor]) -> Dict[str, float]:
        keys = self._result_keys()
        vector = torch.zeros(1 + len(keys), dtype=torch.float64)
        if total is not None:
            vector += total
        vector = sum_across_ranks(vector)
        if vector[0] == 0:
            raise ValueError(f'{type(self).__name__}: no image with a valid pixel in the whole evaluation')
        return {k: float(v) for k, v in zip(keys, (vector[1:] / vector[0]).tolist())}

    def _publish(self, stats: CalibrationStatistics, metrics: Dict[str, float],
                 spatial: Optional[SpatialCalibrationStatistics] = None) -> None:
        """Log the per-class table and hand per-bin statistics to ReliabilityDiagramHook via the MessageHub."""
        names = self._class_names()
        per_class = reliability_bins(stats, self.reliability_bins, classwise=True) if stats.classwise else None
        if stats.classwise:
            print_log(f'per-class calibration ({self.aggregation}, {stats.num_pixels} pixels):\n'
                      + self._format_class_table(stats, names), logger='current')
        record = dict(
            metric=type(self).__name__,
            aggregation=self.aggregation,
            num_pixels=stats.num_pixels,
            bins=self.reliability_bins,
            top_label=_bin_record(reliability_bins(stats, self.reliability_bins)),
            classwise=({name: _bin_record(per_class, row=i) for i, name in enumerate(names)}
                       if per_class is not None else None),
            scalars={k: metrics[k] for k in self._diagram_keys() if k in metrics},
            distance_bands=(spatial.band_table(self.distance_bands)
                            if spatial is not None and self.distance_bands else None),
        )
        name = type(self).__name__ + (f'_{self.prefix}' if self.prefix else '')
        MessageHub.get_current_instance().update_info(RELIABILITY_INFO_PREFIX + name, record)

    def _format_class_table(self, stats: CalibrationStatistics, names: List[str]) -> str:
        from prettytable import PrettyTable

        b = self.headline_bins
        table = classwise_table(stats, n_bins=b)
        out = PrettyTable(field_names=['Class', f'cwECE_{b} (%)', 'pixels', 'in average'])
        for k, name in enumerate(names):
            out.add_row([name, f"{table[f'ECE_{b}'][k]:.4f}", table['pixels'][k],
                         'yes' if table['in_average'][k] else 'no'])
        return out.get_string()

    def _diagram_keys(self) -> Sequence[str]:
        """The scalars printed on the reliability diagram."""
        b = self.headline_bins
        return ('ECE', f'ECE_em_{b}', f'cwCE_{b}', f'MCE_{b}', f'OE_{b}', 'NLL', 'Brier', 'Acc')


@METRICS.register_module()
class PixelCalibrationMetric(_CalibrationMetricBase):
    """Per-pixel calibration of multi-class heads, pooled over every pixel of the dataset (or per image).

    Reads ``seg_logits`` (``(K, H, W)``, logits by default) and ``gt_sem_seg`` of each data sample. Values are
    unrounded; calibration errors, ``AUROC``, ``FPR95`` and ``Acc`` in percent, ``NLL`` and ``Brier`` raw means.

    * **Default (headline) keys**, 12: ``ECE`` (= ``ECE_15``), ``ECE_em_15``, ``cwCE_15``, ``MCE_15``, ``OE_15``,
      ``UE_15``, ``smECE``, ``NLL``, ``Brier``, ``AUROC``, ``FPR95``, ``Acc`` (``bins`` does not apply).
    * ``metrics='all'``: the full grid, for every ``B`` in ``bins``: ``ECE_{B}``, ``ECE_em_{B}``, ``cwCE_{B}``,
      ``cwCE_em_{B}``, ``MCE_{B}``; plus ``ECE``, ``RMSCE_15``, ``dECE_15``, ``OE_15``, ``UE_15``, ``KSCE``,
      ``KDECE``, ``MMCE``, ``smECE``, ``SECE``, ``AUROC``, ``AURC``, ``FPR95``, ``AUPR_err``, ``NLL``, ``Brier``,
      ``Acc``.
    * ``metrics=['ECE', 'MCE', ...]``: those families (see ``METRIC_FAMILIES``) at every ``B`` in ``bins``.
    * ``boundary_width=w`` adds ``boundary_ECE_15``, ``boundary_Acc``, ``boundary_frac`` (pixels at distance
      ``<= w`` from the nearest label boundary; ``boundary_frac`` is their share of the evaluated pixels) and
      ``interior_ECE_15``, ``interior_Acc`` (distance ``> w``). When every pixel falls on one side, the other
      side's ECE and accuracy are NaN, with a logged warning (the one exception to "never NaN").
    * ``distance_bands=(e1, e2, ...)`` collects ECE_15, accuracy, mean confidence and pixel count per band
      (``d <= e1``, ``e1 < d <= e2``, ..., ``d > e_last``); they go to the hook's JSON record
      (``distance_bands``) and :class:`~calibseg.engine.ReliabilityDiagramHook` draws the curve.

    Distances follow the contract of :mod:`calibseg.functional.calibration.spatial` (4-connected boundary pixels,
    exact Euclidean distance; a map without boundary pixels puts all its pixels at infinite distance). Definitions
    of the other keys: :mod:`calibseg.functional.calibration`.

    Args:
        ignore_index: label value of ignored pixels.
        bins: bin counts of the binned keys of ``'all'`` and family lists.
        aggregation: ``'pooled'`` (one histogram over all pixels) or ``'per_image'`` (mean over images of
            per-image values; images without valid pixels are skipped). The distance options need ``'pooled'``.
        exclude_background: drop pixels labelled 0 and leave class 0 out of the class-wise average (the MbLS
            protocol).
        metrics: ``None`` (headline keys), ``'all'`` or a list of key families.
        input_type: ``'logits'`` or ``'probs'`` (what ``seg_logits`` holds).
        reliability_bins: bins of the diagrams that :class:`~calibseg.engine.ReliabilityDiagramHook` draws.
        boundary_width: ``w`` in pixels of the label map (default off).
        distance_bands: increasing band edges in pixels (default off).
        collect_device, prefix: as in mmengine's ``BaseMetric``.

    Example:
        >>> val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
        ...                  dict(type='PixelCalibrationMetric', boundary_width=2, distance_bands=(0, 2, 5, 10))]
    """

    def __init__(self, *, ignore_index: int = 255, bins: Sequence[int] = DEFAULT_BINS, aggregation: str = 'pooled',
                 exclude_background: bool = False, metrics: Union[None, str, Sequence[str]] = None,
                 input_type: str = 'logits', reliability_bins: int = 15, boundary_width: Optional[float] = None,
                 distance_bands: Optional[Sequence[float]] = None, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        self.exclude_background = bool(exclude_background)
        super().__init__(ignore_index=ignore_index, bins=bins, aggregation=aggregation, metrics=metrics,
                         input_type=input_type, reliability_bins=reliability_bins, boundary_width=boundary_width,
                         distance_bands=distance_bands, collect_device=collect_device, prefix=prefix)

    def _num_classes(self) -> int:
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError('PixelCalibrationMetric needs dataset_meta["classes"] (set by the Runner from the '
                             'val/test dataset) to know the number of classes')
        return len(classes)

    def _new_statistics(self, num_classes: int, device: Union[str, torch.device] = 'cpu') -> CalibrationStatistics:
        return CalibrationStatistics(num_classes, input_type=self.input_type, ignore_index=self.ignore_index,
                                     exclude_background=self.exclude_background,
                                     classwise=self._needs_classwise(), device=device)

    def _needs_classwise(self) -> bool:
        families = self.metric_families
        return families is None or any(f.startswith('cwCE') for f in families)


@METRICS.register_module()
class BinaryCalibrationMetric(_CalibrationMetricBase):
    """Per-pixel calibration of one-channel heads (dense binary maps such as saliency).

    Reads ``seg_logits`` (``(1, H, W)``): mmseg stores *sigmoid probabilities* there for one-channel heads, so
    ``input_type='probs'`` is the default (``'logits'`` for configs that keep logits). Prediction ``p >= threshold``
    (0.5; mmseg's own default threshold for one-channel heads is 0.3: calibseg's binary configs set 0.5),
    confidence ``max(p, 1 - p)``. The keys of :class:`PixelCalibrationMetric` with 10 bins in the headline set, as
    in the dense-binary literature: ``ECE`` (= ``ECE_10``), ``ECE_em_10``, ``cwCE_10``, ``MCE_10``, ``OE_10``,
    ``UE_10``, ``smECE``, ``NLL``, ``Brier``, ``AUROC``, ``FPR95``, ``Acc``; ``metrics='all'`` for the full grid;
    the distance options as for :class:`PixelCalibrationMetric`.

    Labels are {0, 1} (masks binarised at load time, e.g. by ``LoadBinaryAnnotations``) with ``ignore_index``. A
    label map whose values are exactly {0, 255} looks like an unconverted 0/255 mask, whose foreground would
    silently be ignored: it is refused unless ``allow_unconverted_masks=True`` (a converted map with ignored
    pixels and no foreground looks the same).

    Args:
        threshold: foreground decision threshold on ``p``.
        allow_unconverted_masks: accept label maps with values exactly {0, 255} (255 = ``ignore_index``).
        others: as :class:`PixelCalibrationMetric`.
    """

    binary = True
    headline_bins = 10

    def __init__(self, *, ignore_index: int = 255, bins: Sequence[int] = DEFAULT_BINS, aggregation: str = 'pooled',
                 metrics: Union[None, str, Sequence[str]] = None, input_type: str = 'probs', threshold: float = 0.5,
                 reliability_bins: int = 10, boundary_width: Optional[float] = None,
                 distance_bands: Optional[Sequence[float]] = None, allow_unconverted_masks: bool = False,
                 collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f'threshold must be in (0, 1), got {threshold}')
        self.threshold = float(threshold)
        self.allow_unconverted_masks = bool(allow_unconverted_masks)
        super().__init__(ignore_index=ignore_index, bins=bins, aggregation=aggregation, metrics=metrics,
                         input_type=input_type, reliability_bins=reliability_bins, boundary_width=boundary_width,
                         distance_bands=distance_bands, collect_device=collect_device, prefix=prefix)

    def _num_classes(self) -> int:
        return 2

    def _class_names(self) -> List[str]:
        classes = (self.dataset_meta or {}).get('classes')
        return list(classes) if classes and len(classes) == 2 else ['background', 'foreground']

    def _new_statistics(self, num_classes: int, device: Union[str, torch.device] = 'cpu') -> CalibrationStatistics:
        return BinaryCalibrationStatistics(input_type=self.input_type, threshold=self.threshold,
                                           ignore_index=self.ignore_index, device=device)

    def _sample_tensors(self, data_sample: dict):
        probs, labels = super()._sample_tensors(data_sample)
        if probs.dim() == 3:
            if probs.shape[0] != 1:
                raise ValueError(f'BinaryCalibrationMetric expects a one-channel head, got seg_logits of shape '
                                 f'{tuple(probs.shape)} in {data_sample.get("img_path", "a sample")}; use '
                                 'PixelCalibrationMetric for multi-class heads')
            probs = probs[0]
        if not self.allow_unconverted_masks and self.ignore_index == 255 and _looks_unconverted(labels):
            raise ValueError(f'BinaryCalibrationMetric: the label map of {data_sample.get("img_path", "a sample")} '
                             'holds only the values 0 and 255: an unconverted 0/255 mask, whose foreground (255) '
                             'would be ignored as ignore_index=255. Binarise masks at load time with '
                             "dict(type='LoadBinaryAnnotations') in the pipeline (labels 0/1), or pass "
                             'allow_unconverted_masks=True if 255 really marks ignored pixels here')
        return probs, labels


def _looks_unconverted(labels: torch.Tensor) -> bool:
    """True when a label map holds exactly the values {0, 255} (no 1): an unconverted 0/255 mask."""
    high = labels == 255
    if not bool(high.any()):
        return False
    low = labels == 0
    return bool(low.any()) and bool((low | high).all())


def _check_spatial(boundary_width, distance_bands, aggregation: str):
    """Validated ``(boundary_width, distance_bands)`` options (``None`` when off)."""
    if boundary_width is not None:
        if isinstance(boundary_width, bool) or not isinstance(boundary_width, (int, float)) \
                or not math.isfinite(boundary_width) or boundary_width < 0:
            raise ValueError(f'boundary_width must be a finite number >= 0 (pixels), got {boundary_width!r}')
        boundary_width = float(boundary_width)
    if distance_bands is not None:
        if isinstance(distance_bands, (str, bytes)) or not hasattr(distance_bands, '__len__'):
            raise ValueError(f'distance_bands must be a sequence of increasing edges, got {distance_bands!r}')
        edges = list(distance_bands)
        if not edges or any(isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e)
                            or e < 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError('distance_bands must be finite, non-negative and strictly increasing edges (pixels), '
                             f'got {distance_bands!r}')
        distance_bands = tuple(float(e) for e in edges)
    if (boundary_width is not None or distance_bands is not None) and aggregation != 'pooled':
        raise ValueError("boundary_width and distance_bands need aggregation='pooled'")
    return boundary_width, distance_bands


def _bin_record(bins: Dict[str, torch.Tensor], row: Optional[int] = None) -> Dict[str, list]:
    """JSON-ready per-bin lists (``None`` for the means of empty bins) from ``reliability_bins`` output."""
    def pick(t: torch.Tensor) -> List[float]:
        return (t if row is None else t[row]).tolist()

    lower, upper = pick(bins['lower']), pick(bins['upper'])
    return dict(edges=lower + upper[-1:], count=[int(n) for n in pick(bins['count'])],
                confidence=[None if math.isnan(v) else v for v in pick(bins['confidence'])],
                accuracy=[None if math.isnan(v) else v for v in pick(bins['accuracy'])])
