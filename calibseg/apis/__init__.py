"""calibseg's importable face: training and testing runs, experiments, inference and post-hoc fitting."""
from .analyze import analyze_calibration
from .export import export_calibrated_checkpoint
from .inference import (
    Progress,
    SegLogits,
    build_dataloader,
    build_model,
    dataloader_key,
    iter_seg_logits,
    progress_printer,
)
from .posthoc import evaluate_calibrator, fit_calibrator
from .runs import test, train

__all__ = ['train', 'test', 'iter_seg_logits', 'SegLogits', 'Progress', 'progress_printer', 'build_model',
           'build_dataloader', 'dataloader_key', 'fit_calibrator', 'evaluate_calibrator',
           'export_calibrated_checkpoint', 'analyze_calibration']
