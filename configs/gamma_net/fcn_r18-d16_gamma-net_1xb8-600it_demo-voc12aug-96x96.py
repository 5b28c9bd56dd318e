# γ-Net meta-regularisation (Wang & Golebiowski, TMLR 2024) on the embedded demo data: the CE baseline's model,
# data and schedule, with the decode head's loss replaced by the sample-wise focal loss whose γ a per-pixel
# γ-Net sets, and γ-Net trained on meta batches from 4 held-out training images (CE + SECE of a one-step
# look-ahead of the classifier). The 32 train+aug images are split once: 28 train the network
# (train_dataloader, part='train'), 4 are γ-Net's meta set (model.meta.dataloader, part='held_out', about the
# 10 % of the paper's protocol); change `held_out` in both places together. Choices where the paper is silent:
# README.md.
_base_ = ['../baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py']
held_out = 4
train_dataloader = dict(
    dataset=dict(
        _delete_=True, type='HeldOutSplit', part='train', held_out=held_out, seed=0,
        dataset={{_base_.train_dataloader.dataset}}))
model = dict(
    type='GammaNetEncoderDecoder',
    decode_head=dict(loss_decode=dict(_delete_=True, type='SampleWiseFocalLoss', loss_weight=1.0)),
    gamma_net=dict(per='pixel', hidden=64, gamma_max=5.0, init_gamma=3.0),
    meta=dict(
        dataloader=dict(
            batch_size=4, num_workers=0, persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(
                type='HeldOutSplit', part='held_out', held_out=held_out, seed=0,
                dataset={{_base_.train_dataloader.dataset}})),
        lr_lookahead=None, sece_bandwidth=0.05, sece_weight=1.0,
        optimizer=dict(type='Adam', lr=1e-3), grad_clip=2.0))
# under torchrun the Runner wraps the model in this DDP wrapper, which hands train_step to the segmentor
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
