# ASLP (Liu et al., ICCV 2023) in its reference setup: per-image alpha (alpha_0 = 0) updated after every step from
# epoch 6 on with eta 0.002, lambda 2000, beta 2, clip [0, 1/(2 beta) - 0.01], using the pixel accuracy on the
# 1,000 held-out DUTS-TR images measured after every epoch. Multi-GPU: the wrapper below keeps the per-step update
# (the table is all-gathered after every step, identical on every rank).
_base_ = ['./deeplabv3plus_r50-d8_bce_1xb10-30ep_duts-384x384.py']
model = dict(
    type='ASLPEncoderDecoder',
    update_from_epoch=6,
    eta=0.002,
    lam=2000.0,
    alpha_margin=0.01,
    prob_clamp=1e-7,
    decode_head=dict(
        loss_decode=dict(_delete_=True, type='SCBCELoss', beta=2.0, alpha=None, seed=0, loss_weight=1.0)))
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
custom_hooks = [dict(type='ReliabilityDiagramHook'), dict(type='ASLPHook', dataloader='aslp_val_dataloader')]
