"""calibseg.apis.posthoc_demo on tiny VOC data: both protocols, uncalibrated and TS rows."""
from __future__ import annotations

import os.path as osp

from calibseg.apis.posthoc_demo import run_posthoc_demo, table


def test_posthoc_demo(tiny_voc, checkpoint, tmp_path):
    root = osp.dirname(osp.dirname(tiny_voc))  # the folder holding VOCdevkit
    results = run_posthoc_demo([checkpoint], methods=['ts'], data_root=root, calib_root=root,
                               work_dir=str(tmp_path / 'demo'), write=False)
    rows = results[checkpoint]
    assert set(rows) == {'generated', 'val-half'}
    for protocol_rows in rows.values():
        assert set(protocol_rows) == {'uncalibrated', 'TS'}
        ts, plain = protocol_rows['TS'], protocol_rows['uncalibrated']
        assert ts['test']['mIoU'] == plain['test']['mIoU']  # TS keeps the predictions
        assert ts['fitted'].startswith('T = ')
        assert ts['fit']['after']['NLL'] <= ts['fit']['before']['NLL'] + 1e-9
        assert '| TS |' in table(protocol_rows)
    assert osp.isfile(tmp_path / 'demo' / 'configs' / 'fcn_r18-d16_ce-ts_1xb8-600it_demo-voc12aug-96x96_val-half.py')
