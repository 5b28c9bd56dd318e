"""Saliency accuracy measures (MAE, max/mean F-measure, S-measure, mean/max E-measure) for mmseg loops."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmseg.registry import METRICS
from torch import Tensor

from ...functional.saliency import SALIENCY_KEYS, saliency_record, summarize_saliency
from ...utils.validation import check_in_range

__all__ = ['SaliencyMetric']

INPUT_TYPES = ('probs', 'logits')


@METRICS.register_module()
class SaliencyMetric(BaseMetric):
    r"""The accuracy measures of salient object detection, on raw foreground probabilities.

    Reports (raw values in ``[0, 1]``, unrounded):

    * ``MAE``: mean over images of :math:`\frac{1}{HW}\sum |p - g|` (Perazzi et al., CVPR 2012);
    * ``maxF`` / ``meanF``: F-measure with :math:`\beta^2 = 0.3` at the 256 thresholds
      :math:`p \ge k/255`, the curve averaged over images, then its maximum / its mean over thresholds
      (Achanta et al., CVPR 2009);
    * ``Sm``: mean S-measure, :math:`\alpha = 0.5` (Fan et al., ICCV 2017);
    * ``meanEm`` / ``maxEm``: E-measure curve over the same thresholds, averaged over images, then its
      mean / maximum (Fan et al., IJCAI 2018; normalised by :math:`HW`, see
      :func:`~calibseg.functional.saliency.emeasure_curve`).

    Each data sample must carry ``seg_logits`` and ``gt_sem_seg``. mmseg stores *sigmoid
    probabilities* in ``seg_logits`` for one-channel heads, hence ``input_type='probs'`` by default;
    ``input_type='logits'`` applies the sigmoid (one channel) or the softmax (two channels, foreground
    = channel 1). The ground truth must be in ``{0, 1}`` (masks binarised at load time with
    ``LoadBinaryAnnotations``; ignored pixels are not supported by the structural measures).

    Per sample, :meth:`process` keeps a small record (two 256-value curves and two scalars), so
    mmengine's gathering and padding removal work as for any metric.

    The public saliency evaluation code min-max rescales every predicted map first; that changes the
    probabilities (and any calibration measured on them), so it is off here and available only as
    ``minmax_normalize=True``.

    Args:
        input_type: ``'probs'`` or ``'logits'``: what ``seg_logits`` holds.
        minmax_normalize: rescale each map to ``[0, 1]`` before measuring (reference-code behaviour).
        beta_sq: :math:`\beta^2` of the F-measure.
        sm_alpha: object/region balance :math:`\alpha` of the S-measure.
        collect_device, prefix: as in mmengine's ``BaseMetric``.

    Raises:
        ValueError: on a bad ``input_type``, ``beta_sq`` or ``sm_alpha``.

    Example:
        >>> val_evaluator = [dict(type='SaliencyMetric'), dict(type='BinaryCalibrationMetric')]
    """

    def __init__(self, *, input_type: str = 'probs', minmax_normalize: bool = False, beta_sq: float = 0.3,
                 sm_alpha: float = 0.5, collect_device: str = 'cpu', prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if input_type not in INPUT_TYPES:
            raise ValueError(f'input_type must be one of {INPUT_TYPES}, got {input_type!r}')
        if not isinstance(minmax_normalize, bool):
            raise ValueError(f'minmax_normalize must be a bool, got {minmax_normalize!r}')
        if isinstance(beta_sq, bool) or not isinstance(beta_sq, (int, float)) or not beta_sq > 0:
            raise ValueError(f'beta_sq must be a number > 0, got {beta_sq!r}')
        self.input_type = input_type
        self.minmax_normalize = minmax_normalize
        self.beta_sq = float(beta_sq)
        self.sm_alpha = check_in_range('sm_alpha', sm_alpha, 0.0, 1.0, high_inclusive=True)

    def _foreground_map(self, seg_logits: Tensor) -> Tensor:
        """``(H, W)`` foreground probabilities from a ``(C, H, W)`` ``seg_logits`` with ``C`` in {1, 2}."""
        if seg_logits.dim() == 2:
            seg_logits = seg_logits.unsqueeze(0)
        if seg_logits.dim() != 3 or seg_logits.shape[0] not in (1, 2):
            raise ValueError(f'SaliencyMetric needs seg_logits of shape (1, H, W) (one-channel head) or '
                             f'(2, H, W), got {tuple(seg_logits.shape)}')
        scores = seg_logits.detach().to(torch.float64)
        if scores.shape[0] == 1:
            return scores[0].sigmoid() if self.input_type == 'logits' else scores[0]
        return scores.softmax(dim=0)[1] if self.input_type == 'logits' else scores[1]

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Append one record per sample (see :func:`~calibseg.functional.saliency.saliency_record`)."""
        for data_sample in data_samples:
            try:
                seg_logits = data_sample['seg_logits']['data']
                label = data_sample['gt_sem_seg']['data']
            except KeyError as err:
                raise KeyError(f'SaliencyMetric needs `seg_logits` and `gt_sem_seg` in each data sample, '
                               f'missing {err}') from err
            pred = self._foreground_map(seg_logits)
            gt = label.squeeze(0) if label.dim() == 3 else label
            try:
                record = saliency_record(pred.cpu(), gt.cpu(), beta_sq=self.beta_sq, sm_alpha=self.sm_alpha,
                                         minmax_normalize=self.minmax_normalize)
            except ValueError as err:
                raise ValueError(f"{data_sample.get('img_path', '<sample>')}: {err}") from err
            self.results.append(record)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """``MAE``, ``maxF``, ``meanF``, ``Sm``, ``meanEm``, ``maxEm`` from all records."""
        summary = summarize_saliency(results)
        return {key: summary[key] for key in SALIENCY_KEYS}
