# RankMixup (M-NDCG) for DeepLabV3+ R-50-D8 on Cityscapes at 512x1024, mmseg's 80k schedule: the Cityscapes CE
# baseline trained by RankMixupEncoderDecoder (CE on the raw batch + 0.1 * M-NDCG over the raw image and three mixed
# batches per step, each lambda ~ Beta(2, 2) with its own permutation, per pixel). The auxiliary FCN head keeps
# mmseg's CE at weight 0.4 on the raw batch. Under DDP, TrainStepDelegatingDDP hands train_step to the segmentor.
_base_ = ['../baseline/deeplabv3plus_r50-d8_ce_4xb2-80k_cityscapes-512x1024.py']
model = dict(
    type='RankMixupEncoderDecoder',
    rankmixup=dict(mode='mndcg', alpha=2.0, loss_weight=0.1, num_mixups=3, seed=0))
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
