# The embedded demo saliency data: a DUTS copy in the real on-disk layout (96x96 images), written by
# `python tools/dataset_converters/generate_demo_data.py --out data/demo`. It is the DUTS base (duts_384x384.py)
# with the demo's root, size and split: DUTS-TR's 120 images are split by HeldOutSplit into 108 training and 12
# held-out images (ASLP's validation accuracy; the reference holds out 1,000 of 10,553, about the same share);
# DUTS-TE's 40 images are the test set and the only one of tools/test_saliency.py. The images are already 96x96,
# so the pipelines have no Resize. One process without dataloader workers (CPU runs).
# (A child config cannot rebind the base's variables, so every dict that uses them is overridden here.)
_base_ = ['./duts_384x384.py']
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
    dataset=dict(held_out=held_out, dataset=dict(data_root=data_root, pipeline=train_pipeline)))
aslp_val_dataloader = dict(
    num_workers=0, dataset=dict(held_out=held_out, dataset=dict(data_root=data_root, pipeline=test_pipeline)))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
saliency_test_sets = {
    '_delete_': True,
    'DUTS-TE': dict(
        type='DUTSDataset',
        data_root=data_root,
        data_prefix=dict(img_path='DUTS-TE/DUTS-TE-Image', seg_map_path='DUTS-TE/DUTS-TE-Mask'),
        pipeline=test_pipeline),
}
