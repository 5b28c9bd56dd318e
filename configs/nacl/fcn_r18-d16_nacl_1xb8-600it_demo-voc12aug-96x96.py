# type='NACLLoss' on the embedded demo data; identical to the CE baseline except for the decode head's loss.
_base_ = ['../baseline/fcn_r18-d16_ce_1xb8-600it_demo-voc12aug-96x96.py']
model = dict(decode_head=dict(loss_decode=dict(_delete_=True, type='NACLLoss', alpha=0.1, kernel_size=3, kernel='mean', distance='l1', border='renormalise', loss_weight=1.0)))
