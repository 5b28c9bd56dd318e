# SC-BCE (fixed alpha 0.025, beta 2) trained on soft targets, as the reference code trains: the grey-level masks
# / 255 (not thresholded) instead of the masks binarised at > 128; otherwise
# fcn_r18-d16_scbce_1xb8-30ep_demo-duts-96x96.py. SoftTargetEncoderDecoder hands data_sample.gt_soft_mask (loaded by
# LoadBinaryAnnotations(soft=True), packed by PackSaliencyInputs) to every loss; the auxiliary head's loss is BCE
# against the same soft targets (SC-BCE with alpha 0). Evaluation reads the binarised masks only.
_base_ = ['./fcn_r18-d16_scbce_1xb8-30ep_demo-duts-96x96.py']
model = dict(
    type='SoftTargetEncoderDecoder',
    auxiliary_head=dict(
        loss_decode=dict(
            _delete_=True, type='SCBCELoss', alpha=0.0, expected=True, loss_weight=0.4, loss_name='loss_bce')))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadBinaryAnnotations', soft=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSaliencyInputs')
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
