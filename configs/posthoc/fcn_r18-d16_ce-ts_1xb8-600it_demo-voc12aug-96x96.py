# Temperature scaling (Guo et al., ICML 2017) of the cross-entropy demo model, applied at test time by
# CalibratedEncoderDecoder. Fitted on `calib_dataloader`: 200 extra images drawn from the demo data's generator
# with another seed (disjoint from the training and val images, same distribution; the 41 demo val images are too
# few to fit per-class and local calibrators, see README.md); tested on the demo val set like the CE baseline.
#   python tools/dataset_converters/generate_demo_data.py --out data/demo_calib --only voc --voc-train 1 \
#       --voc-val 200 --seed 1                                 # once (tools/posthoc_demo.py does it if missing)
#   python tools/fit_calibrator.py THIS_CONFIG CHECKPOINT      # writes model.calibrator.file
#   python tools/test.py THIS_CONFIG CHECKPOINT                # metrics of the calibrated model
# The CTS, VS and LTS demo configs inherit this one and change only the calibrator.
_base_ = ['../baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py']
model = dict(
    type='CalibratedEncoderDecoder',
    calibrator=dict(file='work_dirs/posthoc/fcn_r18-d16_ce-ts_1xb8-600it_demo-voc12aug-96x96/calibrator.pth',
                    method='ts'))
calib_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='PascalVOCDataset',
        data_root='data/demo_calib/VOCdevkit/VOC2012',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassAug'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline={{_base_.test_pipeline}}))
