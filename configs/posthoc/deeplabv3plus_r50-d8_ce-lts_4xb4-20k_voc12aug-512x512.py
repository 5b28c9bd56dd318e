# Local temperature scaling (Ding et al., ICCV 2021) of the cross-entropy DeepLabV3+ R-50 on PASCAL VOC 2012,
# applied to the decode head's logits at their native resolution (1/4 of the input for DeepLabV3+'s decoder)
# before mmseg's bilinear resize; same held-out split of the val set as the TS config.
_base_ = ['./deeplabv3plus_r50-d8_ce-ts_4xb4-20k_voc12aug-512x512.py']
model = dict(
    calibrator=dict(file='work_dirs/posthoc/deeplabv3plus_r50-d8_ce-lts_4xb4-20k_voc12aug-512x512/calibrator.pth',
                    method='lts'))
