# ASLP's reference schedule (Liu et al., ICCV 2023, official code): Adam, lr 2.5e-5, 30 epochs. The reference
# multiplies the learning rate after every epoch e (1-based) by 0.95 ** (e // 10): unchanged for epochs 1-10,
# x0.95 per epoch in 11-20 and x0.9025 per epoch in 21-30 (checked against that rule to float precision).
max_epochs = 30
optimizer = dict(type='Adam', lr=2.5e-5, betas=(0.9, 0.999), weight_decay=0.0)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='ExponentialLR', gamma=0.95, begin=9, end=20, by_epoch=True),
    dict(type='ExponentialLR', gamma=0.95**2, begin=19, end=max_epochs, by_epoch=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=True),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=True, interval=1, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', draw=False))
