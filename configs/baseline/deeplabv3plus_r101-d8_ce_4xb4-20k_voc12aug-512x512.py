# Cross-entropy baseline: DeepLabV3+ R-101 on PASCAL VOC 2012 + SBD (mmseg's 20k schedule), CE averaged over
# non-ignored pixels (avg_non_ignore=True) like calibseg's losses; calibration metrics in the evaluators.
_base_ = ['../_base_/deeplabv3plus_r101-d8_4xb4-20k_voc12aug-512x512_calib.py']
model = dict(decode_head=dict(loss_decode=dict(
    _delete_=True, type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)))
