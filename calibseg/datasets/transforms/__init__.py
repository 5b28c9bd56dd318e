from .check_label_range import CheckLabelRange

__all__ = ['CheckLabelRange']
