# Cross-entropy baseline on Cityscapes: mmseg's DeepLabV3+ R-50-D8 config at 512x1024 (its bases: the DeepLabV3+
# model, mmseg::_base_/datasets/cityscapes.py, the default runtime and mmseg::_base_/schedules/schedule_80k.py;
# 4 GPUs x 2 images), CE averaged over non-ignored pixels (avg_non_ignore=True) like calibseg's losses, evaluated
# with mmseg's mIoU (19 classes) beside the per-pixel calibration keys pooled over the val set, including the 2 px
# band around label boundaries and the interior (boundary_width=2), and reliability diagrams written into the work
# dir. calibseg's Cityscapes method configs inherit this file and replace the decode head's loss; the auxiliary FCN
# head keeps mmseg's cross-entropy at weight 0.4.
_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py']
custom_imports = dict(imports=['calibseg'], allow_failed_imports=False)
model = dict(decode_head=dict(loss_decode=dict(
    _delete_=True, type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)))
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='PixelCalibrationMetric', ignore_index=255, boundary_width=2),
]
test_evaluator = val_evaluator
custom_hooks = [dict(type='ReliabilityDiagramHook')]
