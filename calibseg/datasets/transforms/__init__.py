from .check_label_range import CheckLabelRange
from .load_binary_annotations import LoadBinaryAnnotations

__all__ = ['CheckLabelRange', 'LoadBinaryAnnotations']
