# SC-BCE (fixed alpha 0.025, beta 2) in ASLP's setup, trained on soft targets as the reference code trains: the
# grey-level masks resized bilinearly to 384x384 and divided by 255 (not thresholded); otherwise
# deeplabv3plus_r50-d8_scbce_1xb10-30ep_duts-384x384.py. SoftMaskResize resizes the soft mask bilinearly,
# PackSaliencyInputs packs it, SoftTargetEncoderDecoder hands it to every loss (the auxiliary head's: BCE, i.e.
# SC-BCE with alpha 0). Evaluation reads the binarised masks only.
_base_ = ['./deeplabv3plus_r50-d8_scbce_1xb10-30ep_duts-384x384.py']
model = dict(
    type='SoftTargetEncoderDecoder',
    auxiliary_head=dict(
        loss_decode=dict(
            _delete_=True, type='SCBCELoss', alpha=0.0, expected=True, loss_weight=0.4, loss_name='loss_bce')))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadBinaryAnnotations', soft=True),
    dict(type='SoftMaskResize', scale=(384, 384), keep_ratio=False),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSaliencyInputs')
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
