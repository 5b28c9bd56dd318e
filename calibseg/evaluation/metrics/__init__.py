from .pixel_calibration_metric import BinaryCalibrationMetric, PixelCalibrationMetric
from .saliency_metric import SaliencyMetric

__all__ = ['BinaryCalibrationMetric', 'PixelCalibrationMetric', 'SaliencyMetric']
