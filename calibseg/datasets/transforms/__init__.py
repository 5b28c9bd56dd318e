from .check_label_range import CheckLabelRange
from .corrupt_image import CorruptImage
from .load_binary_annotations import LoadBinaryAnnotations
from .soft_mask import PackSaliencyInputs, SoftMaskResize

__all__ = ['CheckLabelRange', 'CorruptImage', 'LoadBinaryAnnotations', 'PackSaliencyInputs', 'SoftMaskResize']
