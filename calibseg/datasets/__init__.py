from .held_out_split import HeldOutSplit, held_out_indices
from .saliency import (
    DUTOMRONDataset,
    DUTSDataset,
    ECSSDDataset,
    HKUISDataset,
    PASCALSDataset,
    SaliencyDataset,
    SODDataset,
)
from .transforms import CheckLabelRange, CorruptImage, LoadBinaryAnnotations

__all__ = [
    'HeldOutSplit', 'held_out_indices', 'CheckLabelRange', 'CorruptImage', 'LoadBinaryAnnotations',
    'SaliencyDataset', 'DUTSDataset', 'ECSSDDataset', 'HKUISDataset',
    'PASCALSDataset', 'DUTOMRONDataset', 'SODDataset'
]
