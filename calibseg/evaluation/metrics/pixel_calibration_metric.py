"""Per-pixel calibration metrics for mmseg's val/test loops, exact and in bounded memory on 1 or N processes."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, print_log
from mmseg.registry import METRICS

from ...engine.hooks.reliability_diagram_hook import RELIABILITY_INFO_PREFIX
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
from ...utils.distributed import sum_across_ranks
from .stream_state import PaddingAwareAccumulator

__all__ = ['PixelCalibrationMetric', 'BinaryCalibrationMetric']

AGGREGATIONS = ('pooled', 'per_image')


class _CalibrationMetricBase(BaseMetric):
    """Shared machinery: per-sample statistics, padding removal, cross-rank merge, publication for the hook.

    Instead of mmengine's list of per-sample results, each rank sums fixed-size float64 statistics
    (:class:`~calibseg.functional.calibration.CalibrationStatistics`) and ``evaluate`` all-reduces them, so memory
    does not grow with the number of images or pixels and the result does not depend on the number of processes.
    """

    binary = False
    headline_bins = 15

    def __init__(self, *, ignore_index: int = 255, bins: Sequence[int] = DEFAULT_BINS,
                 aggregation: str = 'pooled', metrics: Optional[Sequence[str]] = None, input_type: str = 'logits',
                 reliability_bins: int = 15, collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f'aggregation must be one of {AGGREGATIONS}, got {aggregation!r}')
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
        self._keys: Optional[List[str]] = None
        self._new_statistics(num_classes=3)  # fail now, not after the first val epoch, on a bad input_type

    # ------------------------------------------------------------------ hooks for subclasses
    def _new_statistics(self, num_classes: int) -> CalibrationStatistics:
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

    def _class_names(self) -> List[str]:
        classes = (self.dataset_meta or {}).get('classes')
        return list(classes) if classes else [str(k) for k in range(self._num_classes())]

    # ------------------------------------------------------------------ statistics
    @staticmethod
    def _add(total, sample):
        """Sum statistics objects (pooled) or per-image value vectors (per_image); ``None`` adds nothing."""
        if sample is None:
            return total
        if total is None:
            return sample
        return total.merge(sample) if isinstance(total, CalibrationStatistics) else total + sample

    def _compute(self, stats: CalibrationStatistics) -> Dict[str, float]:
        return calibration_metrics(stats, metrics=self.metric_families, bins=self.bins)

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
        """Reduce each sample's ``seg_logits`` and ``gt_sem_seg`` to statistics (no per-pixel state kept)."""
        for data_sample in data_samples:
            inputs, labels = self._sample_tensors(data_sample)
            stats = self._new_statistics(self._num_classes())
            stats.update(inputs, labels, name=data_sample.get('img_path', None))
            if self.aggregation == 'per_image':
                self._accumulator.push(self._per_image_record(stats))
            else:
                self._accumulator.push(stats)
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
        self._accumulator.reset()
        self.results.clear()
        if self.aggregation == 'per_image':
            metrics = self._evaluate_per_image(total)
        else:
            metrics = self._evaluate_pooled(total)
        if self.prefix:
            metrics = {f'{self.prefix}/{k}': v for k, v in metrics.items()}
        return metrics

    def _evaluate_pooled(self, total: Optional[CalibrationStatistics]) -> Dict[str, float]:
        stats = total if total is not None else self._new_statistics(self._num_classes())
        stats = stats.from_tensor(sum_across_ranks(stats.to_tensor()))
        if stats.num_pixels == 0:
            raise ValueError(f'{type(self).__name__}: no valid pixel in the whole evaluation (every label is '
                             f'ignore_index={self.ignore_index}, or nothing was processed)')
        metrics = self._compute(stats)
        self._publish(stats, metrics)
        return metrics

    def _evaluate_per_image(self, total: Optional[torch.Tensor]) -> Dict[str, float]:
        keys = self._result_keys()
        vector = torch.zeros(1 + len(keys), dtype=torch.float64)
        if total is not None:
            vector += total
        vector = sum_across_ranks(vector)
        if vector[0] == 0:
            raise ValueError(f'{type(self).__name__}: no image with a valid pixel in the whole evaluation')
        return {k: float(v) for k, v in zip(keys, (vector[1:] / vector[0]).tolist())}

    def _publish(self, stats: CalibrationStatistics, metrics: Dict[str, float]) -> None:
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
            scalars={k: metrics[k] for k in self._headline_keys() if k in metrics},
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

    def _headline_keys(self) -> Sequence[str]:
        b = self.headline_bins
        return ('ECE', f'ECE_em_{b}', f'cwCE_{b}', f'MCE_{b}', f'OE_{b}', 'NLL', 'Brier', 'Acc')


@METRICS.register_module()
class PixelCalibrationMetric(_CalibrationMetricBase):
    """Per-pixel calibration of multi-class heads, pooled over every pixel of the dataset (or per image).

    Reads ``seg_logits`` (``(K, H, W)``, logits by default) and ``gt_sem_seg`` of each data sample. Result keys
    (unrounded; calibration errors and ``Acc`` in percent, ``NLL`` and ``Brier`` raw means): for every ``B`` in
    ``bins``: ``ECE_{B}``, ``ECE_em_{B}``, ``cwCE_{B}``, ``cwCE_em_{B}``, ``MCE_{B}``; plus ``ECE`` (= ``ECE_15``),
    ``RMSCE_15``, ``dECE_15``, ``OE_15``, ``UE_15``, ``KSCE``, ``KDECE``, ``MMCE``, ``smECE``, ``SECE``, ``AUROC``,
    ``AURC``, ``NLL``, ``Brier``, ``Acc``. Definitions: :mod:`calibseg.functional.calibration`.

    Args:
        ignore_index: label value of ignored pixels.
        bins: bin counts of the binned keys.
        aggregation: ``'pooled'`` (one histogram over all pixels) or ``'per_image'`` (mean over images of
            per-image values; images without valid pixels are skipped).
        exclude_background: drop pixels labelled 0 and leave class 0 out of the class-wise average (the MbLS
            protocol).
        metrics: key families to compute (e.g. ``['ECE', 'MCE']``); default all.
        input_type: ``'logits'`` or ``'probs'`` (what ``seg_logits`` holds).
        reliability_bins: bins of the diagrams that :class:`~calibseg.engine.ReliabilityDiagramHook` draws.
        collect_device, prefix: as in mmengine's ``BaseMetric``.
    """

    def __init__(self, *, ignore_index: int = 255, bins: Sequence[int] = DEFAULT_BINS, aggregation: str = 'pooled',
                 exclude_background: bool = False, metrics: Optional[Sequence[str]] = None,
                 input_type: str = 'logits', reliability_bins: int = 15, collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        self.exclude_background = bool(exclude_background)
        super().__init__(ignore_index=ignore_index, bins=bins, aggregation=aggregation, metrics=metrics,
                         input_type=input_type, reliability_bins=reliability_bins,
                         collect_device=collect_device, prefix=prefix)

    def _num_classes(self) -> int:
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError('PixelCalibrationMetric needs dataset_meta["classes"] (set by the Runner from the '
                             'val/test dataset) to know the number of classes')
        return len(classes)

    def _new_statistics(self, num_classes: int) -> CalibrationStatistics:
        return CalibrationStatistics(num_classes, input_type=self.input_type, ignore_index=self.ignore_index,
                                     exclude_background=self.exclude_background,
                                     classwise=self._needs_classwise())

    def _needs_classwise(self) -> bool:
        families = self.metric_families
        return families is None or any(f.startswith('cwCE') for f in families)


@METRICS.register_module()
class BinaryCalibrationMetric(_CalibrationMetricBase):
    """Per-pixel calibration of one-channel heads (dense binary maps such as saliency).

    Reads ``seg_logits`` (``(1, H, W)``): mmseg stores *sigmoid probabilities* there for one-channel heads, so
    ``input_type='probs'`` is the default (``'logits'`` for configs that keep logits). Prediction ``p >= threshold``
    (0.5; mmseg's own default threshold for one-channel heads is 0.3: calibseg's binary configs set 0.5),
    confidence ``max(p, 1 - p)``. Same key family with ``_{B}`` suffixes for every ``B``; the headline ``ECE`` is
    ``ECE_10`` as in the dense-binary literature, with ``OE_10`` and ``UE_10``. Labels are {0, 1} (masks
    binarised at load time) with ``ignore_index``.

    Args:
        threshold: foreground decision threshold on ``p``.
        others: as :class:`PixelCalibrationMetric`.
    """

    binary = True
    headline_bins = 10

    def __init__(self, *, ignore_index: int = 255, bins: Sequence[int] = DEFAULT_BINS, aggregation: str = 'pooled',
                 metrics: Optional[Sequence[str]] = None, input_type: str = 'probs', threshold: float = 0.5,
                 reliability_bins: int = 10, collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f'threshold must be in (0, 1), got {threshold}')
        self.threshold = float(threshold)
        super().__init__(ignore_index=ignore_index, bins=bins, aggregation=aggregation, metrics=metrics,
                         input_type=input_type, reliability_bins=reliability_bins,
                         collect_device=collect_device, prefix=prefix)

    def _num_classes(self) -> int:
        return 2

    def _class_names(self) -> List[str]:
        classes = (self.dataset_meta or {}).get('classes')
        return list(classes) if classes and len(classes) == 2 else ['background', 'foreground']

    def _new_statistics(self, num_classes: int) -> CalibrationStatistics:
        return BinaryCalibrationStatistics(input_type=self.input_type, threshold=self.threshold,
                                           ignore_index=self.ignore_index)

    def _sample_tensors(self, data_sample: dict):
        probs, labels = super()._sample_tensors(data_sample)
        if probs.dim() == 3:
            if probs.shape[0] != 1:
                raise ValueError(f'BinaryCalibrationMetric expects a one-channel head, got seg_logits of shape '
                                 f'{tuple(probs.shape)} in {data_sample.get("img_path", "a sample")}; use '
                                 'PixelCalibrationMetric for multi-class heads')
            probs = probs[0]
        return probs, labels


def _bin_record(bins: Dict[str, torch.Tensor], row: Optional[int] = None) -> Dict[str, list]:
    """JSON-ready per-bin lists (``None`` for the means of empty bins) from ``reliability_bins`` output."""
    def pick(t: torch.Tensor) -> List[float]:
        return (t if row is None else t[row]).tolist()

    lower, upper = pick(bins['lower']), pick(bins['upper'])
    return dict(edges=lower + upper[-1:], count=[int(n) for n in pick(bins['count'])],
                confidence=[None if math.isnan(v) else v for v in pick(bins['confidence'])],
                accuracy=[None if math.isnan(v) else v for v in pick(bins['accuracy'])])
