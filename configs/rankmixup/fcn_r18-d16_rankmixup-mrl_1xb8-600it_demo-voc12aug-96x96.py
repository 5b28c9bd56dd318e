# RankMixup with the mixup ranking loss (MRL) on the embedded demo data: the CE baseline's model and schedule,
# trained by RankMixupEncoderDecoder (CE on the raw batch + 0.1 * MRL on one mixed batch per step,
# lambda ~ Beta(2, 2), margin 1 on the top logit, per pixel). TrainStepDelegatingDDP hands train_step to the
# segmentor under DDP (tools/dist_train.sh); single-process runs ignore it.
_base_ = ['../baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py']
model = dict(
    type='RankMixupEncoderDecoder',
    rankmixup=dict(mode='mrl', alpha=2.0, margin=1.0, loss_weight=0.1, num_mixups=1, seed=0))
model_wrapper_cfg = dict(type='TrainStepDelegatingDDP')
