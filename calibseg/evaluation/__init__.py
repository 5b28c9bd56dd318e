from .metrics import BinaryCalibrationMetric, PixelCalibrationMetric

__all__ = ['BinaryCalibrationMetric', 'PixelCalibrationMetric']
