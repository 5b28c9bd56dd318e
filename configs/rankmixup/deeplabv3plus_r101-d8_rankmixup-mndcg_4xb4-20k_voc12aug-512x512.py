# RankMixup (M-NDCG) for DeepLabV3+ R-101 on PASCAL VOC 2012 + SBD, mmseg's 20k schedule: the CE baseline config
# trained by RankMixupEncoderDecoder (CE on the raw batch + 0.1 * M-NDCG over the raw image and three mixed batches
# per step, each lambda ~ Beta(2, 2) with its own permutation, per pixel). The auxiliary FCN head keeps mmseg's CE
# at weight 0.4 on the raw batch. Under DDP, TrainStepDelegatingDDP hands train_step to the segmentor.
_base_ = ['../baseline/deeplabv3plus_r101-d8_ce_4xb4-20k_voc12aug-512x512.py']
model = dict(
    type='RankMixupEncoderDecoder',
    rankmixup=dict(mode='mndcg', alpha=2.0, loss_weight=0.1, num_mixups=3, seed=0))
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
