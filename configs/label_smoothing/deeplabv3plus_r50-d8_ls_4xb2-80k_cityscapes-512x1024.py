# DeepLabV3+ R-50-D8 on Cityscapes at 512x1024, mmseg's 80k schedule, with type='LabelSmoothingLoss' on the decode head.
# The auxiliary FCN head keeps mmseg's cross-entropy at weight 0.4.
_base_ = ['../baseline/deeplabv3plus_r50-d8_ce_4xb2-80k_cityscapes-512x1024.py']
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='LabelSmoothingLoss', smoothing=0.05, loss_weight=1.0)))
