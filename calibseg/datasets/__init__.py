from .saliency import (
    DUTOMRONDataset,
    DUTSDataset,
    ECSSDDataset,
    HKUISDataset,
    PASCALSDataset,
    SaliencyDataset,
    SODDataset,
)
from .transforms import CheckLabelRange, LoadBinaryAnnotations

__all__ = [
    'CheckLabelRange', 'LoadBinaryAnnotations', 'SaliencyDataset', 'DUTSDataset', 'ECSSDDataset', 'HKUISDataset',
    'PASCALSDataset', 'DUTOMRONDataset', 'SODDataset'
]
