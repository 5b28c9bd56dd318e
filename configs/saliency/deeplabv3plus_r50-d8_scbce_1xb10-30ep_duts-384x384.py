# SC-BCE with a fixed alpha (Liu et al., ICCV 2023) in ASLP's setup; identical to the BCE config otherwise.
# Code units: beta=2 (reference default), alpha=0.025 (label smoothing eps = 2*alpha*beta = 0.1 in expectation).
_base_ = ['./deeplabv3plus_r50-d8_bce_1xb10-30ep_duts-384x384.py']
model = dict(
    decode_head=dict(
        loss_decode=dict(_delete_=True, type='SCBCELoss', beta=2.0, alpha=0.025, seed=0, loss_weight=1.0)))
