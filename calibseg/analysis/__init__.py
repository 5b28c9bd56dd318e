"""Where and when a segmentation model is miscalibrated: per class, near label boundaries, per image, under
corruption shift (the library behind ``tools/analyze_calibration.py``)."""
from .accumulator import HEADLINE_FAMILIES, CalibrationAnalysis, ImageRecord, top_label
from .shift_comparison import ShiftEntry, compare_under_shift, entry_from_work_dir

__all__ = ['CalibrationAnalysis', 'ImageRecord', 'HEADLINE_FAMILIES', 'top_label', 'ShiftEntry',
           'compare_under_shift', 'entry_from_work_dir']
