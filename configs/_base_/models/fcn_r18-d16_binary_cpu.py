# The small CPU FCN (ResNetV1c-18 OS16, BN everywhere, no pretrained weights) as a dense binary predictor:
# one output channel (sigmoid foreground probability), decision threshold 0.5 (mmseg's default for one-channel
# heads is 0.3), mmseg's binary cross-entropy averaged over the non-ignored pixels. The auxiliary FCN head
# keeps mmseg's weight 0.4 with the same binary loss.
_base_ = ['./fcn_r18-d16_cpu.py']
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
