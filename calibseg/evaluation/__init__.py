from .metrics import BinaryCalibrationMetric, PixelCalibrationMetric, SaliencyMetric

__all__ = ['BinaryCalibrationMetric', 'PixelCalibrationMetric', 'SaliencyMetric']
