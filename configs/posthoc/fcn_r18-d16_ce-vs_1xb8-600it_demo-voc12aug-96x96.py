# Vector scaling (Guo et al., ICML 2017: w_k z_k + b_k, fitted by NLL)
# of the cross-entropy demo model; same calibration and test images as the TS config.
_base_ = ['./fcn_r18-d16_ce-ts_1xb8-600it_demo-voc12aug-96x96.py']
model = dict(
    calibrator=dict(file='work_dirs/posthoc/fcn_r18-d16_ce-vs_1xb8-600it_demo-voc12aug-96x96/calibrator.pth',
                    method='vs'))
