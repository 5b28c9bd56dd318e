"""calibseg's losses, registered in ``mmseg.registry.MODELS`` on import."""
from .acls_loss import ACLSLoss
from .adaptive_focal_loss import AdaptiveFocalLoss
from .base import CalibrationLossBase
from .focal_loss import SoftmaxFocalLoss
from .label_smoothing_loss import LabelSmoothingLoss
from .mbls_loss import MbLSLoss
from .mdca_loss import MDCALoss
from .nacl_loss import NACLLoss
from .samplewise_focal_loss import SampleWiseFocalLoss
from .scbce import SCBCELoss
from .sece_loss import SECELoss
from .svls_loss import SVLSLoss

__all__ = [
    'CalibrationLossBase', 'SoftmaxFocalLoss', 'AdaptiveFocalLoss', 'LabelSmoothingLoss',
    'MbLSLoss', 'MDCALoss', 'ACLSLoss', 'SCBCELoss', 'SampleWiseFocalLoss', 'SECELoss',
    'SVLSLoss', 'NACLLoss'
]
