# RankMixup (MRL) for DeepLabV3+ R-50 on PASCAL VOC 2012 + SBD, mmseg's 20k schedule: the CE baseline config
# trained by RankMixupEncoderDecoder (CE on the raw batch + 0.1 * MRL on one mixed batch per step, lambda ~
# Beta(2, 2), margin 1 on the top logit, per pixel). The auxiliary FCN head keeps mmseg's CE at weight 0.4 on the
# raw batch. Under DDP, TrainStepDelegatingDDP hands train_step to the segmentor.
_base_ = ['../baseline/deeplabv3plus_r50-d8_ce_4xb4-20k_voc12aug-512x512.py']
model = dict(
    type='RankMixupEncoderDecoder',
    rankmixup=dict(mode='mrl', alpha=2.0, margin=1.0, loss_weight=0.1, num_mixups=1, seed=0))
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
