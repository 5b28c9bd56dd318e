# The CE demo baseline in automatic mixed precision: mmengine's AmpOptimWrapper on a GPU, bfloat16 autocast without
# loss scaling on CPU (calibseg's MixedPrecisionOptimWrapper; mmengine's own wrapper refuses to start without an
# accelerator). Any calibseg loss can replace the CE: the losses compute in float32 under autocast. 40 iterations:
# bfloat16 convolutions are slow on CPUs without bfloat16 units, and tools/compare_methods.py (600it configs) does
# not pick this variant up as a method.
_base_ = ['./fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py']
max_iters = 40
optim_wrapper = dict(type='MixedPrecisionOptimWrapper', dtype='bfloat16')
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters, by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters // 2))
