# DeepLabV3+ R-50 on PASCAL VOC 2012 + SBD, mmseg's 20k schedule, with type='SVLSLoss' on the decode head.
# The auxiliary FCN head keeps mmseg's cross-entropy at weight 0.4. Open choices: README.md.
_base_ = ['../baseline/deeplabv3plus_r50-d8_ce_4xb4-20k_voc12aug-512x512.py']
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='SVLSLoss', kernel_size=3, sigma=1.0, border='renormalise', loss_weight=1.0)))
