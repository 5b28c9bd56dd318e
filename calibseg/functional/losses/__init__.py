"""Pure-PyTorch calibration losses for semantic segmentation (no OpenMMLab import).

Every loss takes ``(N, C, *spatial)`` logits and ``(N, *spatial)`` integer labels, drops pixels
labelled ``ignore_index``, and shares the keyword-only options ``weight``, ``class_weight``,
``ignore_index``, ``reduction`` and ``avg_factor`` (see :mod:`calibseg.functional.losses.utils`).
"""
from .acls import acls_loss, validate_acls_args
from .adaptive_focal import adaptive_focal_loss, validate_adaptive_focal_args
from .focal import softmax_focal_loss, validate_focal_args
from .label_smoothing import label_smoothing_loss, validate_label_smoothing_args
from .mbls import mbls_loss, validate_mbls_args
from .mdca import mdca_loss, mdca_term, validate_mdca_args
from .nacl import nacl_loss, validate_nacl_args
from .rankmixup import mixup_pair_valid, mndcg_loss, mrl_loss
from .scbce import scbce_loss, validate_scbce_args
from .sece import sece_loss, validate_sece_loss_args
from .svls import svls_loss, validate_svls_args
from .utils import Pixels, flatten_pixels, prepare_pixels, reduce_loss

__all__ = [
    'softmax_focal_loss', 'adaptive_focal_loss', 'label_smoothing_loss', 'mbls_loss', 'mdca_loss',
    'acls_loss', 'scbce_loss', 'sece_loss', 'mdca_term', 'flatten_pixels', 'prepare_pixels', 'reduce_loss', 'Pixels',
    'validate_focal_args', 'validate_adaptive_focal_args', 'validate_label_smoothing_args',
    'validate_mbls_args', 'validate_mdca_args', 'validate_acls_args', 'validate_scbce_args',
    'validate_sece_loss_args',
    'mrl_loss', 'mndcg_loss', 'mixup_pair_valid', 'svls_loss', 'validate_svls_args', 'nacl_loss',
    'validate_nacl_args'
]
