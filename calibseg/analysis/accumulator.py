"""Everything the calibration analysis reports about one model (or one model + calibrator), accumulated per image.

:class:`CalibrationAnalysis` takes one image's logits and labels at a time (what
:func:`calibseg.apis.iter_seg_logits` yields) and keeps fixed-size float64 sums, so memory does not grow with the
dataset and the sums of N processes add up to those of one:

* the pooled per-pixel statistics of :class:`~calibseg.functional.calibration.CalibrationStatistics`
  (every metric key, the reliability diagram and its confidence histogram);
* :class:`~calibseg.functional.calibration.SpatialCalibrationStatistics` over distance bands to the nearest label
  boundary (the boundary / interior split is the band ``d <= boundary_width``);
* mmseg's IoU areas (``IoUMetric.intersect_and_union``; mIoU, mAcc, aAcc by mmseg's own arithmetic);
* per *predicted* class, top-label sums per 15 equal-width bins: ``ECE_k = Σ_b |Σ acc - Σ conf| / n_k`` over the
  pixels predicted as class ``k`` ("when the model says *cat* with confidence c, is it right a fraction c of the
  time?"), with the pixel counts per predicted and per true class;
* per image: top-label ECE (15 equal-width bins ``(b/15, (b+1)/15]``), accuracy and mean confidence, and the
  ``worst_k`` images by that ECE with their (down-sampled) prediction, confidence and label maps for a gallery.

One-channel (binary) heads: the logit is the foreground's, the prediction is ``sigmoid(z) >= threshold``, the
confidence ``max(p, 1 - p)`` and the classes are (background, foreground).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..functional.calibration import (
    BinaryCalibrationStatistics,
    CalibrationStatistics,
    SpatialCalibrationStatistics,
    calibration_metrics,
    reliability_bins,
)
from ..functional.saliency.summary import saliency_record, summarize_saliency
from ..utils.distributed import dist_info, sum_across_ranks

__all__ = ['CalibrationAnalysis', 'ImageRecord', 'HEADLINE_FAMILIES', 'top_label']

HEADLINE_FAMILIES = ('ECE', 'ECE_em', 'cwCE', 'MCE', 'OE', 'UE', 'smECE', 'NLL', 'Brier', 'AUROC', 'FPR95',
                     'AUPR_err', 'AURC', 'Acc')
_BINS = 15


@dataclass
class ImageRecord:
    """One image's numbers (and, for the worst images, its maps down-sampled to at most ``map_size`` pixels)."""

    index: int
    img_path: str
    ece: float
    accuracy: float
    confidence: float
    pixels: int
    maps: Optional[Dict[str, np.ndarray]] = None
    saliency: Optional[Dict[str, Tensor]] = None


def top_label(logits: Tensor, *, binary: bool, threshold: float = 0.5):
    """``(confidence, prediction)`` maps of ``(K, H, W)`` logits (``(1, H, W)`` for a one-channel head), float32.

    Example:
        >>> conf, pred = top_label(torch.tensor([[[0.0]], [[2.0]]]), binary=False)
        >>> round(float(conf), 4), int(pred)
        (0.8808, 1)
    """
    z = logits.float()
    if binary:
        p = torch.sigmoid(z[0])
        pred = (p >= threshold).long()
        return torch.where(pred == 1, p, 1.0 - p), pred
    conf, pred = F.softmax(z, dim=0).max(dim=0)
    return conf, pred


def _bin_of(conf: Tensor, n_bins: int = _BINS) -> Tensor:
    """Equal-width bin ``(b/B, (b+1)/B]`` of each confidence (0 goes to the first bin)."""
    return (torch.ceil(conf.double() * n_bins) - 1).clamp(0, n_bins - 1).long()


class CalibrationAnalysis:
    """Accumulate the analysis of one model over images (see the module docstring).

    Args:
        num_classes: classes of the head (1 for a one-channel head).
        ignore_index: label of ignored pixels.
        threshold: foreground threshold of a one-channel head.
        distance_bands: increasing band edges in pixels for calibration against the boundary distance.
        boundary_width: ``w`` of the boundary band (must be one of ``distance_bands``).
        worst_k: images kept for the gallery (by per-image ECE).
        map_size: longest side of the maps kept for the gallery.
        class_names: names for the report (default: the class indices).

    Example:
        >>> analysis = CalibrationAnalysis(num_classes=3, distance_bands=(1, 2), boundary_width=1, worst_k=1)
        >>> labels = torch.tensor([[0, 0, 1, 1]] * 4)
        >>> analysis.update(torch.randn(3, 4, 4), labels, index=0, img_path='a.jpg')
        >>> results = analysis.results()
        >>> sorted(results)[:4], results['images'][0]['img_path']
        (['bands', 'boundary', 'classes', 'headline'], 'a.jpg')
    """

    def __init__(self, *, num_classes: int, ignore_index: int = 255, threshold: float = 0.5,
                 distance_bands: Sequence[float] = (1, 2, 4, 8, 16, 32), boundary_width: float = 2,
                 worst_k: int = 6, map_size: int = 256, class_names: Optional[Sequence[str]] = None) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
        self.binary = num_classes == 1
        self.num_classes = 2 if self.binary else num_classes
        if self.num_classes < 2:
            raise ValueError('a multi-class head needs at least 2 classes')
        self.ignore_index = int(ignore_index)
        self.threshold = float(threshold)
        self.distance_bands = [float(e) for e in distance_bands]
        if float(boundary_width) not in self.distance_bands:
            raise ValueError(f'boundary_width={boundary_width} must be one of distance_bands={list(distance_bands)}')
        self.boundary_width = float(boundary_width)
        if not isinstance(worst_k, int) or worst_k < 0:
            raise ValueError(f'worst_k must be a non-negative int, got {worst_k!r}')
        self.worst_k = worst_k
        self.map_size = int(map_size)
        k = self.num_classes
        self.class_names = list(class_names) if class_names else (
            ['background', 'foreground'] if self.binary else [str(i) for i in range(k)])
        if len(self.class_names) != k:
            raise ValueError(f'{len(self.class_names)} class names for {k} classes')
        if self.binary:
            self.stats = BinaryCalibrationStatistics(input_type='logits', threshold=self.threshold,
                                                     ignore_index=self.ignore_index)
        else:
            self.stats = CalibrationStatistics(k, input_type='logits', ignore_index=self.ignore_index)
        self.spatial = SpatialCalibrationStatistics(self.distance_bands, num_classes=k, input_type='logits',
                                                    binary=self.binary, threshold=self.threshold,
                                                    ignore_index=self.ignore_index)
        self.areas = torch.zeros(4, k, dtype=torch.float64)  # intersect, union, pred, label (mmseg's order)
        self.per_class = torch.zeros(k, 3, _BINS, dtype=torch.float64)  # by predicted class: n, Σconf, Σacc
        self.images: List[ImageRecord] = []
        self._reduced = False

    # ------------------------------------------------------------------------------------------ accumulate
    def update(self, logits: Tensor, labels: Tensor, *, index: int, img_path: str = '',
               image: Union[None, np.ndarray, Callable[[], np.ndarray]] = None) -> None:
        """Add one image: ``logits`` ``(K, H, W)`` (``(1, H, W)`` one-channel), ``labels`` ``(H, W)``.

        ``image`` (``(H, W, 3)`` RGB uint8, or a callable returning it, called only for the worst images) is kept
        with the maps of the gallery's images.
        """
        if self._reduced:
            raise RuntimeError('this analysis was already reduced across processes; build a new one')
        if logits.dim() != 3 or labels.dim() != 2 or tuple(logits.shape[1:]) != tuple(labels.shape):
            raise ValueError(f'{img_path or index}: logits {tuple(logits.shape)} and labels {tuple(labels.shape)} '
                             'must be (K, H, W) and (H, W)')
        expected = 1 if self.binary else self.num_classes
        if logits.shape[0] != expected:
            raise ValueError(f'{img_path or index}: logits have {logits.shape[0]} channels, expected {expected}')
        name = img_path or f'image {index}'
        labels = labels.long()
        self.stats.update(logits[None], labels[None], name=name)
        self.spatial.update(logits, labels, name=name)
        valid = labels != self.ignore_index
        conf, pred = top_label(logits, binary=self.binary, threshold=self.threshold)
        self._add_areas(pred, labels, valid)
        conf_v, pred_v, lab_v = conf[valid], pred[valid], labels[valid]
        correct = (pred_v == lab_v).double()
        n = int(valid.sum())
        k = self.num_classes
        if n:
            cell = pred_v * _BINS + _bin_of(conf_v)
            for i, w in enumerate((None, conf_v.double(), correct)):
                self.per_class[:, i] += torch.bincount(cell, weights=w, minlength=k * _BINS).double().cpu().view(
                    k, _BINS)
            b = _bin_of(conf_v)
            s_c = torch.bincount(b, weights=conf_v.double(), minlength=_BINS)
            s_a = torch.bincount(b, weights=correct, minlength=_BINS)
            ece = 100.0 * float((s_a - s_c).abs().sum()) / n
            acc, mean_conf = 100.0 * float(correct.mean()), 100.0 * float(conf_v.double().mean())
        else:
            ece = acc = mean_conf = math.nan
        record = ImageRecord(index=int(index), img_path=str(img_path), ece=ece, accuracy=acc, confidence=mean_conf,
                             pixels=n)
        if self.binary and n == labels.numel():  # saliency measures need fully labelled maps
            record.saliency = saliency_record(torch.sigmoid(logits[0].float()).cpu(), labels.cpu())
        self.images.append(record)
        if self.worst_k and n and self._is_candidate(ece):
            record.maps = self._maps(conf, pred, labels, image() if callable(image) else image)
            self._trim_candidates()

    def _add_areas(self, pred: Tensor, labels: Tensor, valid: Tensor) -> None:
        from mmseg.evaluation.metrics import IoUMetric

        areas = IoUMetric.intersect_and_union(pred.cpu(), labels.cpu(), self.num_classes, self.ignore_index)
        self.areas += torch.stack([a.double() for a in areas])

    def _candidates(self) -> List[ImageRecord]:
        return [r for r in self.images if r.maps is not None]

    def _is_candidate(self, ece: float) -> bool:
        held = self._candidates()
        return len(held) < self.worst_k or ece > min(r.ece for r in held)

    def _trim_candidates(self) -> None:
        held = sorted(self._candidates(), key=lambda r: (-r.ece, r.index))
        for r in held[self.worst_k:]:
            r.maps = None

    def _maps(self, conf: Tensor, pred: Tensor, labels: Tensor, image: Optional[np.ndarray]) -> Dict[str, Any]:
        h, w = labels.shape
        step = max(1, math.ceil(max(h, w) / self.map_size))
        out = dict(confidence=conf[::step, ::step].cpu().numpy().astype(np.float16),
                   prediction=pred[::step, ::step].cpu().numpy().astype(np.int16),
                   labels=labels[::step, ::step].cpu().numpy().astype(np.int16))
        if image is not None:
            out['image'] = np.ascontiguousarray(image[::step, ::step])
        return out

    # ------------------------------------------------------------------------------------------ reduce
    def reduce(self) -> CalibrationAnalysis:
        """Sum the statistics over processes and gather the per-image records (a no-op in one process)."""
        if self._reduced:
            return self
        self._reduced = True
        rank, world = dist_info()
        if world == 1:
            return self
        import torch.distributed as dist

        flat = torch.cat([self.stats.to_tensor().cpu(), self.spatial.to_tensor(), self.areas.reshape(-1),
                          self.per_class.reshape(-1)])
        flat = sum_across_ranks(flat).cpu()
        sizes = [self.stats.state_size, self.spatial.state_size, self.areas.numel(), self.per_class.numel()]
        parts = torch.split(flat, sizes)
        self.stats = self.stats.from_tensor(parts[0])
        self.spatial = self.spatial.from_tensor(parts[1])
        self.areas = parts[2].reshape(self.areas.shape).clone()
        self.per_class = parts[3].reshape(self.per_class.shape).clone()
        gathered: List[Optional[List[ImageRecord]]] = [None] * world
        dist.all_gather_object(gathered, self.images)
        self.images = sorted((r for part in gathered for r in part), key=lambda r: r.index)
        self._trim_candidates()
        return self

    # ------------------------------------------------------------------------------------------ results
    def headline(self) -> Dict[str, float]:
        """Accuracy (mmseg's IoU arithmetic) and the calibration keys of :data:`HEADLINE_FAMILIES`."""
        from mmseg.evaluation.metrics import IoUMetric

        out: Dict[str, float] = {}
        inter, union, pred, label = self.areas
        iou = IoUMetric.total_area_to_metrics(inter, union, pred, label, ['mIoU'])  # mmseg's arithmetic, unrounded
        with np.errstate(invalid='ignore'):
            out['mIoU'] = 100.0 * float(np.nanmean(iou['IoU'])) if union.sum() else math.nan
            out['mAcc'] = 100.0 * float(np.nanmean(iou['Acc'])) if label.sum() else math.nan
        out['aAcc'] = 100.0 * float(iou['aAcc'])
        bins = (10, 15) if self.binary else (15,)
        metrics = calibration_metrics(self.stats, metrics=list(HEADLINE_FAMILIES), bins=bins)
        out.update(metrics)
        records = [r.saliency for r in self.images if r.saliency is not None]
        if records:
            out.update(summarize_saliency(records))
        return out

    def boundary(self) -> Dict[str, float]:
        """``boundary_*`` (distance <= w) and ``interior_*`` (distance > w) keys, and the share of the
        calibration error that lies in the boundary band (NaN where a side has no pixel)."""
        table = self.spatial.band_table([self.boundary_width])
        n_b, n_i = table['count']
        total = n_b + n_i
        nan = math.nan

        def val(x):
            return nan if x is None else x
        out = dict(boundary_ECE_15=val(table['ECE'][0]), boundary_Acc=val(table['accuracy'][0]),
                   boundary_conf=val(table['confidence'][0]),
                   interior_ECE_15=val(table['ECE'][1]), interior_Acc=val(table['accuracy'][1]),
                   interior_conf=val(table['confidence'][1]),
                   boundary_frac=100.0 * n_b / total if total else nan, boundary_width=self.boundary_width)
        err_b = (table['ECE'][0] or 0.0) * n_b
        err_i = (table['ECE'][1] or 0.0) * n_i
        out['boundary_error_share'] = 100.0 * err_b / (err_b + err_i) if err_b + err_i > 0 else nan
        return out

    def classes(self) -> Dict[str, list]:
        """Per class: top-label ECE_15 over the pixels *predicted* as the class, their count, the pixels
        *labelled* as the class, and the class's IoU."""
        from mmseg.evaluation.metrics import IoUMetric

        n, s_c, s_a = self.per_class[:, 0], self.per_class[:, 1], self.per_class[:, 2]
        count = n.sum(-1)
        ece = [100.0 * float((s_a[k] - s_c[k]).abs().sum() / count[k]) if count[k] > 0 else None
               for k in range(self.num_classes)]
        conf = [100.0 * float(s_c[k].sum() / count[k]) if count[k] > 0 else None for k in range(self.num_classes)]
        acc = [100.0 * float(s_a[k].sum() / count[k]) if count[k] > 0 else None for k in range(self.num_classes)]
        inter, union, pred, label = self.areas
        iou = IoUMetric.total_area_to_metrics(inter, union, pred, label, ['mIoU'])['IoU']
        return dict(name=self.class_names, ECE_15=ece, confidence=conf, precision=acc,
                    predicted_pixels=[int(v) for v in count], labelled_pixels=[int(v) for v in label],
                    IoU=[None if not union[k] else 100.0 * float(iou[k]) for k in range(self.num_classes)])

    def reliability(self) -> Dict[str, list]:
        """The top-label reliability record (15 bins) for :func:`~calibseg.visualization.plot_reliability_diagram`."""
        bins = reliability_bins(self.stats, _BINS)
        count = [int(v) for v in bins['count']]
        return dict(edges=[i / _BINS for i in range(_BINS + 1)], count=count,
                    confidence=[None if c == 0 else float(v) for c, v in zip(count, bins['confidence'])],
                    accuracy=[None if c == 0 else float(v) for c, v in zip(count, bins['accuracy'])])

    def results(self) -> Dict[str, Any]:
        """Every number of the analysis as plain JSON-able data (call :meth:`reduce` first under torchrun)."""
        worst = sorted((r for r in self.images if r.maps is not None), key=lambda r: (-r.ece, r.index))
        return dict(
            headline=self.headline(), boundary=self.boundary(), bands=self.spatial.band_table(),
            classes=self.classes(), reliability=self.reliability(),
            images=[dict(index=r.index, img_path=r.img_path, ECE_15=_json(r.ece), Acc=_json(r.accuracy),
                         confidence=_json(r.confidence), pixels=r.pixels) for r in self.images],
            worst=[r.index for r in worst])

    def worst_images(self) -> List[ImageRecord]:
        """The ``worst_k`` images by per-image ECE, worst first, with their maps."""
        return sorted((r for r in self.images if r.maps is not None), key=lambda r: (-r.ece, r.index))


def _json(x: float) -> Optional[float]:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
