# DUTS-TR -> {DUTS-TE, ECSSD, HKU-IS, PASCAL-S, DUT-OMRON, SOD} at 384x384, ASLP's setup (Liu et al., ICCV 2023).
# Training: DUTS-TR (10,553 images) split by HeldOutSplit into 9,553 training and 1,000 held-out images (ASLP's
# validation accuracy; the reference code ships its own split lists, Dataset/DUTS-TR-{Train,Validation}.txt,
# usable through DUTSDataset's ann_file instead). Images and masks are resized to 384x384 (aspect ratio not
# kept, as in the reference) with random horizontal flips. Testing: images resized to 384x384, predictions
# resized back to the original size and compared with the original masks (loaded after the resize).
# Folders (conventional layouts, see calibseg/datasets/saliency.py; `data/` holds one folder per dataset):
#   data/DUTS/DUTS-TR/DUTS-TR-{Image,Mask}, data/DUTS/DUTS-TE/DUTS-TE-{Image,Mask}, data/ECSSD/{images,
#   ground_truth_mask}, data/HKU-IS/{imgs,gt}, data/PASCAL-S/*.jpg|*.png, data/DUT-OMRON/{DUT-OMRON-image,
#   pixelwiseGT-new-PNG}, data/SOD/{Image,Mask}. Check a download with
#   tools/dataset_converters/check_saliency_dataset.py.
data_root = 'data/DUTS'
crop_size = (384, 384)
held_out = 1000
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadBinaryAnnotations'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='LoadBinaryAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=10,
    num_workers=4,
    persistent_workers=True,
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
    num_workers=4,
    dataset=dict(
        type='HeldOutSplit',
        part='held_out',
        held_out=held_out,
        seed=0,
        dataset=dict(type='DUTSDataset', data_root=data_root, pipeline=test_pipeline)))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='DUTSDataset',
        data_root=data_root,
        data_prefix=dict(img_path='DUTS-TE/DUTS-TE-Image', seg_map_path='DUTS-TE/DUTS-TE-Mask'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# the six test sets of `python tools/test_saliency.py CONFIG CHECKPOINT` (one block per set + a summary table)
saliency_test_sets = {
    'DUTS-TE': dict(
        type='DUTSDataset',
        data_root=data_root,
        data_prefix=dict(img_path='DUTS-TE/DUTS-TE-Image', seg_map_path='DUTS-TE/DUTS-TE-Mask'),
        pipeline=test_pipeline),
    'ECSSD': dict(type='ECSSDDataset', data_root='data/ECSSD', pipeline=test_pipeline),
    'HKU-IS': dict(type='HKUISDataset', data_root='data/HKU-IS', pipeline=test_pipeline),
    'PASCAL-S': dict(type='PASCALSDataset', data_root='data/PASCAL-S', pipeline=test_pipeline),
    'DUT-OMRON': dict(type='DUTOMRONDataset', data_root='data/DUT-OMRON', pipeline=test_pipeline),
    'SOD': dict(type='SODDataset', data_root='data/SOD', pipeline=test_pipeline),
}
# accuracy on the raw probabilities (no per-image min-max rescaling) and calibration pooled over all pixels
val_evaluator = [dict(type='SaliencyMetric'), dict(type='BinaryCalibrationMetric')]
test_evaluator = val_evaluator
