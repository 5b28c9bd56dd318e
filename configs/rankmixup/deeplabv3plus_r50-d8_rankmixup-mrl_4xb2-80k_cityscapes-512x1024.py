# RankMixup (MRL) for DeepLabV3+ R-50-D8 on Cityscapes at 512x1024, mmseg's 80k schedule: the Cityscapes CE baseline
# trained by RankMixupEncoderDecoder (CE on the raw batch + 0.1 * MRL on one mixed batch per step, lambda ~
# Beta(2, 2), margin 1 on the top logit, per pixel). The auxiliary FCN head keeps mmseg's CE at weight 0.4 on the
# raw batch. Under DDP, TrainStepDelegatingDDP hands train_step to the segmentor.
_base_ = ['../baseline/deeplabv3plus_r50-d8_ce_4xb2-80k_cityscapes-512x1024.py']
model = dict(
    type='RankMixupEncoderDecoder',
    rankmixup=dict(mode='mrl', alpha=2.0, margin=1.0, loss_weight=0.1, num_mixups=1, seed=0))
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
