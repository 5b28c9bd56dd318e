# ASLP in its reference setup, trained on soft targets as the reference code trains: the grey-level masks resized
# bilinearly to 384x384 and divided by 255 (not thresholded); otherwise
# deeplabv3plus_r50-d8_aslp_1xb10-30ep_duts-384x384.py. SoftMaskResize resizes the image and the soft mask bilinearly
# (the binarised label map by nearest neighbour, as Resize); PackSaliencyInputs packs data_sample.gt_soft_mask;
# ASLPEncoderDecoder(soft_targets=True) hands it to SC-BCE and to ASLP's per-image BCE_i. The auxiliary head's loss
# is BCE against the same soft targets (SC-BCE with alpha 0). Evaluation reads the binarised masks only.
_base_ = ['./deeplabv3plus_r50-d8_aslp_1xb10-30ep_duts-384x384.py']
model = dict(
    soft_targets=True,
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
