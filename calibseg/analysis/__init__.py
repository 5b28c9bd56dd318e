"""Where and when a segmentation model is miscalibrated: per class, near label boundaries, per image, under
corruption shift (the library behind ``tools/analyze_calibration.py``)."""
from .accumulator import HEADLINE_FAMILIES, CalibrationAnalysis, ImageRecord, top_label

__all__ = ['CalibrationAnalysis', 'ImageRecord', 'HEADLINE_FAMILIES', 'top_label']
