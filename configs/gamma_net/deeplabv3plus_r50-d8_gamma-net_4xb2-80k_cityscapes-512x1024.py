# γ-Net meta-regularisation (Wang & Golebiowski, TMLR 2024): DeepLabV3+ R-50-D8 on Cityscapes at 512x1024, mmseg's
# 80k schedule. The decode head trains with the sample-wise focal loss whose γ a per-pixel γ-Net reads from the
# head's classifier features; γ-Net learns from meta batches of 300 held-out training images (CE + SECE of a
# one-step look-ahead of the classifier). The 2,975 train images are split once: 2,675 train the network
# (train_dataloader, part='train'), 300 are γ-Net's meta set (model.meta.dataloader, part='held_out'); change
# `held_out` in both places together. The auxiliary FCN head keeps mmseg's cross-entropy at weight 0.4.
# Choices where the paper is silent: README.md.
_base_ = ['../baseline/deeplabv3plus_r50-d8_ce_4xb2-80k_cityscapes-512x1024.py']
held_out = 300
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
            batch_size=2, num_workers=2, persistent_workers=True,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(
                type='HeldOutSplit', part='held_out', held_out=held_out, seed=0,
                dataset={{_base_.train_dataloader.dataset}})),
        lr_lookahead=None, sece_bandwidth=0.05, sece_weight=1.0,
        optimizer=dict(type='Adam', lr=1e-3), grad_clip=2.0))
# hands train_step to the segmentor under DDP (mmengine's MMDistributedDataParallel would skip the meta step)
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
