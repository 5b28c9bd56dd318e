# Local temperature scaling (Ding et al., ICCV 2021: z(x) / T(x), T from a small CNN on the logits) of the
# cross-entropy demo model. CalibratedEncoderDecoder applies it to the decode head's logits at their native
# resolution (6x6 for 96 px inputs at output stride 16), before mmseg's bilinear resize; tools/fit_calibrator.py
# fits it there, with the loss taken after that resize (--lts-loss input). Same calibration and test images as
# the TS config.
_base_ = ['./fcn_r18-d16_ce-ts_1xb8-600it_demo-voc12aug-96x96.py']
model = dict(
    calibrator=dict(file='work_dirs/posthoc/fcn_r18-d16_ce-lts_1xb8-600it_demo-voc12aug-96x96/calibrator.pth',
                    method='lts'))
