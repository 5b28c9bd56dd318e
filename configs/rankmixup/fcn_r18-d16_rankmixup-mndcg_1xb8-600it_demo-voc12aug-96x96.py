# RankMixup with the multi-mixup NDCG loss (M-NDCG) on the embedded demo data: the CE baseline's model and
# schedule, trained by RankMixupEncoderDecoder (CE on the raw batch + 0.1 * M-NDCG over the raw image and three
# mixed batches per step, each lambda ~ Beta(2, 2) with its own permutation, per pixel). TrainStepDelegatingDDP
# hands train_step to the segmentor under DDP (tools/dist_train.sh); single-process runs ignore it.
_base_ = ['../baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py']
model = dict(
    type='RankMixupEncoderDecoder',
    rankmixup=dict(mode='mndcg', alpha=2.0, loss_weight=0.1, num_mixups=3, seed=0))
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
