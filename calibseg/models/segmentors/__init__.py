"""calibseg's segmentors: mmseg ``EncoderDecoder`` subclasses (training schemes, post-hoc calibration at test time)."""
from .aslp_encoder_decoder import ASLPEncoderDecoder
from .calibrated_encoder_decoder import (
    BINARY_CALIBRATOR_ALIASES,
    CALIBRATOR_ALIASES,
    CalibratedEncoderDecoder,
    image_at_logits_size,
    resolve_calibrator_method,
)
from .gamma_net_encoder_decoder import GammaNetEncoderDecoder
from .rankmixup_encoder_decoder import RankMixupEncoderDecoder
from .soft_targets import SoftTargetEncoderDecoder

__all__ = ['ASLPEncoderDecoder', 'GammaNetEncoderDecoder', 'SoftTargetEncoderDecoder',
           'RankMixupEncoderDecoder', 'CalibratedEncoderDecoder', 'CALIBRATOR_ALIASES', 'BINARY_CALIBRATOR_ALIASES',
           'resolve_calibrator_method', 'image_at_logits_size']
