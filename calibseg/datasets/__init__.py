from .transforms import CheckLabelRange

__all__ = ['CheckLabelRange']
