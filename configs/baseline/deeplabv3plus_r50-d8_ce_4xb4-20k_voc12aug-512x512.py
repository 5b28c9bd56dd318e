# Cross-entropy baseline: mmseg's DeepLabV3+ R-50 PASCAL VOC 2012 + SBD config (20k iterations, 4 GPUs x 4 images),
# CE averaged over non-ignored pixels (avg_non_ignore=True) like calibseg's losses, evaluated with mmseg's mIoU (all
# 21 classes) beside every per-pixel calibration key, pooled over all pixels of the val set, and reliability
# diagrams written into the work dir. calibseg's VOC method configs inherit this file and replace the decode head's
# loss; the auxiliary FCN head keeps mmseg's cross-entropy at weight 0.4.
_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py']
custom_imports = dict(imports=['calibseg'], allow_failed_imports=False)
model = dict(decode_head=dict(loss_decode=dict(
    _delete_=True, type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='PixelCalibrationMetric', ignore_index=255),
]
test_evaluator = val_evaluator
custom_hooks = [dict(type='ReliabilityDiagramHook')]
