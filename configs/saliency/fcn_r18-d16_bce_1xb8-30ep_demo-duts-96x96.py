# BCE baseline on the embedded demo saliency data (CPU): the small binary FCN (one sigmoid channel, threshold 0.5)
# trained on 108 DUTS-TR images for 30 epochs of batch 8, tested on the 40 DUTS-TE images.
_base_ = [
    '../_base_/models/fcn_r18-d16_binary_cpu.py', '../_base_/datasets/demo_duts.py',
    '../_base_/cpu_runtime.py', '../_base_/schedules/demo_30ep_saliency.py'
]
crop_size = (96, 96)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
log_processor = dict(by_epoch=True)  # epoch-based loop (mmseg's runtime logs by iteration)
