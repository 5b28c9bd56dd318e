# Temperature scaling of the cross-entropy DeepLabV3+ R-50 on PASCAL VOC 2012 (calibseg's baseline config). The
# 1,449 val images are split in two deterministic halves (HeldOutSplit, seed 0): the calibrator is fitted on the
# held-out half (`calib_dataloader`, 724 images) and tested on the other 725 (`test_dataloader`).
#   python tools/fit_calibrator.py THIS_CONFIG work_dirs/deeplabv3plus_r50-d8_ce_4xb4-20k_voc12aug-512x512/iter_20000.pth
#   python tools/test.py THIS_CONFIG work_dirs/deeplabv3plus_r50-d8_ce_4xb4-20k_voc12aug-512x512/iter_20000.pth
_base_ = ['../baseline/deeplabv3plus_r50-d8_ce_4xb4-20k_voc12aug-512x512.py']
model = dict(
    type='CalibratedEncoderDecoder',
    calibrator=dict(file='work_dirs/posthoc/deeplabv3plus_r50-d8_ce-ts_4xb4-20k_voc12aug-512x512/calibrator.pth',
                    method='ts'))
calib_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='HeldOutSplit', dataset={{_base_.val_dataloader.dataset}}, part='held_out', held_out=0.5,
                 seed=0))
test_dataloader = dict(
    dataset=dict(_delete_=True, type='HeldOutSplit', dataset={{_base_.val_dataloader.dataset}}, part='train',
                 held_out=0.5, seed=0))
