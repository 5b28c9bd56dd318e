# mmseg's DeepLabV3+ ResNetV1c-50 (OS8, ImageNet-pretrained backbone) as a dense binary predictor: one output
# channel (sigmoid foreground probability), decision threshold 0.5 (mmseg's default for one-channel heads is
# 0.3), mmseg's binary cross-entropy averaged over the non-ignored pixels; auxiliary FCN head at weight 0.4.
# mmseg's SyncBN is kept (GPU configs; mmengine turns it into BN in single-process runs).
_base_ = ['mmseg::_base_/models/deeplabv3plus_r50-d8.py']
model = dict(
    decode_head=dict(
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0, avg_non_ignore=True)),
    auxiliary_head=dict(
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.4, avg_non_ignore=True)))
