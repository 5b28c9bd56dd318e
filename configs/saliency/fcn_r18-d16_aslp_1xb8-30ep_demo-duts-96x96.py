# ASLP (Liu et al., ICCV 2023): SC-BCE with one alpha per training image, alpha_0 = 0, updated after every step
# from epoch 6 on (the reference's `epoch > 5`; epochs 1-5 are plain BCE) with the reference rule (eta 0.002,
# lambda 2000, beta 2, clip [0, 1/(2 beta) - 0.01]) and the pixel accuracy on the 12 held-out DUTS-TR images
# measured after every epoch. The table lives in the segmentor (ASLPEncoderDecoder: checkpointed, resumed
# exactly, identical on every rank); ASLPHook measures the accuracy and logs the table each epoch.
_base_ = ['./fcn_r18-d16_bce_1xb8-30ep_demo-duts-96x96.py']
model = dict(
    type='ASLPEncoderDecoder',
    update_from_epoch=6,
    eta=0.002,
    lam=2000.0,
    alpha_margin=0.01,
    prob_clamp=1e-7,
    decode_head=dict(
        loss_decode=dict(_delete_=True, type='SCBCELoss', beta=2.0, alpha=None, seed=0, loss_weight=1.0)))
# the per-step update lives in the segmentor's train_step: under DDP only this wrapper calls it
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
custom_hooks = [dict(type='ReliabilityDiagramHook'), dict(type='ASLPHook', dataloader='aslp_val_dataloader')]
