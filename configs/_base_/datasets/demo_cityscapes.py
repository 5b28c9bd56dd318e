# A small synthetic Cityscapes copy in the real on-disk layout (19 train ids, 255 unlabelled), read by mmseg's own
# CityscapesDataset exactly as it reads the real dataset; written by calibseg.datasets.demo.cityscapes
# (the calibration study's copy, 32 train / 60 val images of 64x128: calibseg.study.cityscapes.ensure_cityscapes_data;
# `python tools/dataset_converters/generate_demo_data.py --only cityscapes` writes a 12 / 4 image copy).
# It is mmseg's Cityscapes base with the demo's root and pipelines: the images are already 64x128, so there is no
# Resize or crop, and labels are checked against the 19 classes. One process without dataloader workers (CPU runs).
# The study's cross-dataset recipes (calibseg.study.cityscapes) swap these datasets into the VOC demo configs.
# (A child config cannot rebind the base's variables, so every dict that uses them is overridden here.)
_base_ = ['mmseg::_base_/datasets/cityscapes.py']
data_root = 'data/demo_cityscapes/cityscapes'
crop_size = (64, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckLabelRange', num_classes=19),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckLabelRange', num_classes=19),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='PixelCalibrationMetric', ignore_index=255),
]
test_evaluator = val_evaluator
