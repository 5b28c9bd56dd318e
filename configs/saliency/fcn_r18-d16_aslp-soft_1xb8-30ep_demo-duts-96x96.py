# ASLP trained on soft targets, as the reference code trains: the grey-level masks / 255 (not thresholded) instead
# of the masks binarised at > 128; otherwise fcn_r18-d16_aslp_1xb8-30ep_demo-duts-96x96.py. The soft mask is loaded
# beside the binarised one (LoadBinaryAnnotations(soft=True)), flipped with it and packed as
# data_sample.gt_soft_mask (PackSaliencyInputs); ASLPEncoderDecoder(soft_targets=True) hands it to SC-BCE and to
# ASLP's per-image BCE_i. The auxiliary head's loss is BCE against the same soft targets (SC-BCE with alpha 0).
# The binarised masks still mark ignored pixels, give the held-out accuracy, and are all that evaluation reads.
_base_ = ['./fcn_r18-d16_aslp_1xb8-30ep_demo-duts-96x96.py']
model = dict(
    soft_targets=True,
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
