# Cross-entropy baseline on the embedded demo data (mmseg's CrossEntropyLoss, averaged over non-ignored
# pixels like calibseg's losses). The auxiliary FCN head keeps mmseg's CE at weight 0.4 in every config.
_base_ = [
    '../_base_/models/fcn_r18-d16_cpu.py', '../_base_/datasets/demo_voc12_aug.py',
    '../_base_/cpu_runtime.py', '../_base_/schedules/demo_600it.py'
]
crop_size = (96, 96)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(
        num_classes=21,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0, avg_non_ignore=True)),
    auxiliary_head=dict(num_classes=21))
