# A small FCN for CPU runs: ResNetV1c-18 at output stride 16 (undilated first three stages, stage 4 dilated
# by 2), BN everywhere (SyncBN has no CPU kernel, so it fails under gloo), no pretrained weights.
# It inherits mmseg's packaged FCN base and overrides every norm_cfg explicitly: a child config cannot
# rebind the base's `norm_cfg` variable.
_base_ = ['mmseg::_base_/models/fcn_r50-d8.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        depth=18,
        dilations=(1, 1, 1, 2),
        strides=(1, 2, 2, 1),
        norm_cfg=norm_cfg,
        contract_dilation=True),
    decode_head=dict(
        in_channels=512, channels=128, num_convs=1, concat_input=False, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=256, channels=64, norm_cfg=norm_cfg))
