# mmseg's DeepLabV3+ R-50 PASCAL VOC 2012 + SBD config (20k iterations, 4 GPUs x 4 images), evaluated with
# mmseg's mIoU (all 21 classes) beside every per-pixel calibration key, pooled over all pixels of the val set,
# and reliability diagrams written into the work dir. calibseg's VOC method configs inherit this file.
_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py']
custom_imports = dict(imports=['calibseg'], allow_failed_imports=False)
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='PixelCalibrationMetric', ignore_index=255),
]
test_evaluator = val_evaluator
custom_hooks = [dict(type='ReliabilityDiagramHook')]
