# BCE baseline in ASLP's setup: DeepLabV3+ R-50 (ImageNet-pretrained, one sigmoid channel, threshold 0.5) trained
# on 9,553 DUTS-TR images at 384x384, Adam lr 2.5e-5, batch 10 (1 GPU), 30 epochs; evaluated on DUTS-TE at the
# end and on all six test sets with `python tools/test_saliency.py CONFIG CHECKPOINT`.
_base_ = [
    '../_base_/models/deeplabv3plus_r50-d8_binary.py', '../_base_/datasets/duts_384x384.py',
    'mmseg::_base_/default_runtime.py', '../_base_/schedules/adam_30ep_saliency.py'
]
custom_imports = dict(imports=['calibseg'], allow_failed_imports=False)
crop_size = (384, 384)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
custom_hooks = [dict(type='ReliabilityDiagramHook')]
randomness = dict(seed=0)
log_processor = dict(by_epoch=True)  # epoch-based loop (mmseg's runtime logs by iteration)
