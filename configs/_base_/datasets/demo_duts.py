# The embedded demo saliency data: a DUTS copy in the real on-disk layout (96x96 images), written by
# `python tools/dataset_converters/generate_demo_data.py --out data/demo`. DUTS-TR's 120 images are split by
# HeldOutSplit into 108 training and 12 held-out images (ASLP's validation accuracy; the reference holds out
# 1,000 of 10,553, about the same share); DUTS-TE's 40 images are the test set. Masks are 0/255 PNGs loaded as
# {0, 1} by LoadBinaryAnnotations.
data_root = 'data/demo/DUTS'
crop_size = (96, 96)
held_out = 12
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadBinaryAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadBinaryAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='HeldOutSplit',
        part='train',
        held_out=held_out,
        seed=0,
        dataset=dict(type='DUTSDataset', data_root=data_root, pipeline=train_pipeline)))
# held-out part of DUTS-TR (the complement of the training part): read by ASLPHook, unused by the other methods
aslp_val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    dataset=dict(
        type='HeldOutSplit',
        part='held_out',
        held_out=held_out,
        seed=0,
        dataset=dict(type='DUTSDataset', data_root=data_root, pipeline=test_pipeline)))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='DUTSDataset',
        data_root=data_root,
        data_prefix=dict(img_path='DUTS-TE/DUTS-TE-Image', seg_map_path='DUTS-TE/DUTS-TE-Mask'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# every test set of tools/test_saliency.py (the demo data has DUTS-TE only)
saliency_test_sets = {
    'DUTS-TE': dict(
        type='DUTSDataset',
        data_root=data_root,
        data_prefix=dict(img_path='DUTS-TE/DUTS-TE-Image', seg_map_path='DUTS-TE/DUTS-TE-Mask'),
        pipeline=test_pipeline),
}
# accuracy on the raw probabilities (no per-image min-max rescaling) and calibration pooled over all pixels
val_evaluator = [dict(type='SaliencyMetric'), dict(type='BinaryCalibrationMetric')]
test_evaluator = val_evaluator
