from .pixel_calibration_metric import BinaryCalibrationMetric, PixelCalibrationMetric

__all__ = ['BinaryCalibrationMetric', 'PixelCalibrationMetric']
