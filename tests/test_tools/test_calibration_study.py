"""tools/calibration_study.py on tiny checkpoints: schema, values against a direct computation, resume, failures,
the table writer, the distributed temperature fit, and the same row under torchrun with 2 processes."""
from __future__ import annotations

import csv
import importlib.util
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from calibseg_testing import DEMO_CONFIG, ROOT, tiny_run_options

from calibseg.calibrators import TemperatureScaling

BINS = (5, 10, 15, 20, 25, 50, 100, 200, 500)
K = 21


def _load_tool():
    spec = importlib.util.spec_from_file_location('calibration_study',
                                                  osp.join(ROOT, 'tools', 'calibration_study.py'))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


study = _load_tool()


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope='module')
def setup(tiny_voc, tmp_path_factory):
    """A work dir with a dumped tiny config and two checkpoints (different weights; the second 4x sharper logits,
    so its T is far from 1), plus a broken checkpoint."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import calibseg  # noqa: F401

    root = tmp_path_factory.mktemp('study')
    work_dir = root / 'wd_tiny'
    work_dir.mkdir()
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(tiny_run_options(tiny_voc))
    cfg.merge_from_dict({'model.decode_head.channels': 16, 'model.auxiliary_head.channels': 8})
    config = str(work_dir / 'fcn_r18-d16_ce_4it_tiny-voc-32x32.py')
    cfg.dump(config)
    init_default_scope('mmseg')
    for it, sharpen in ((1, 1.0), (2, 4.0)):
        torch.manual_seed(it)
        model = MODELS.build(cfg.model)
        with torch.no_grad():
            model.decode_head.conv_seg.weight.mul_(sharpen)
        torch.save({'meta': {'iter': it}, 'state_dict': model.state_dict()}, work_dir / f'iter_{it}.pth')
    broken = root / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    return dict(root=root, config=config, work_dir=work_dir, broken=str(broken), cfg=cfg)


def _args(setup, out):
    return ['--work-dirs', str(setup['root'] / 'wd_*'), '--all-checkpoints',
            '--models', f"{setup['config']}:{setup['broken']}", '--out', str(out), '--log-every', '0']


@pytest.fixture(scope='module')
def first_run(setup):
    out = setup['root'] / 'study.csv'
    failures = study.main(_args(setup, out))
    return dict(out=out, failures=failures, rows=study.read_table(str(out)))


def _predictions(setup, checkpoint):
    """``{part: (logits, labels)}`` of every image of both parts of the default split, computed without the tool."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    cfg = setup['cfg']
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)['state_dict'])
    model.eval()
    out = {}
    for part in ('held_out', 'train'):
        dataset = DATASETS.build(dict(type='HeldOutSplit', dataset=cfg.val_dataloader.dataset, part=part,
                                      held_out=0.5, seed=0))
        logits, labels = [], []
        with torch.no_grad():
            for i in range(len(dataset)):
                sample = model.test_step(pseudo_collate([dataset[i]]))[0]
                logits.append(sample.seg_logits.data)
                labels.append(sample.gt_sem_seg.data[0])
        out[part] = (logits, labels)
    return out


# ------------------------------------------------------------------------------------------------ the study
def test_schema_one_row_per_model_and_post_ts_columns(first_run):
    rows = first_run['rows']
    assert [r['name'] for r in rows] == ['wd_tiny@iter_1', 'wd_tiny@iter_2']
    columns = list(rows[0])
    calibration = [f'{fam}_{b}' for fam in ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE') for b in BINS] + [
        'KSCE', 'KDECE', 'MMCE', 'NLL', 'Brier', 'smECE', 'SECE', 'AUROC', 'AURC', 'HCS']
    expected = ['model_id', 'name', 'method', 'loss', 'iteration', 'decode_channels', 'config', 'checkpoint',
                'test_pixels', 'T', 'started_at', 'finished_at', 'mIoU', 'aAcc', *calibration,
                *[f'post_{k}' for k in calibration]]
    assert not [c for c in expected if c not in columns]
    assert columns.index('model_id') == 0 and columns.index('mIoU') < columns.index('ECE_15') < \
        columns.index('post_ECE_15')
    for row in rows:
        assert row['method'] == 'ce'  # the method field of the config name
        assert row['loss'] == 'CrossEntropyLoss' and row['decode_channels'] == '16'
        assert row['fit_images'] == '2' and row['test_images'] == '3'  # 5 val images: 2 fit, 3 test
        assert int(row['test_pixels']) > 0 and row['ts_method'] == 'nll'
    assert [r['iteration'] for r in rows] == ['1', '2']
    assert rows[0]['model_id'] != rows[1]['model_id']


def test_values_match_a_direct_computation_from_the_logits(setup, first_run):
    row = first_run['rows'][1]
    checkpoint = str(setup['work_dir'] / 'iter_2.pth')
    predictions = _predictions(setup, checkpoint)
    fit_z, fit_y = predictions['held_out']
    ts = TemperatureScaling(num_classes=K).fit([(z[None], y[None]) for z, y in zip(fit_z, fit_y)])
    t = float(row['T'])
    assert t == pytest.approx(ts.fit_info['temperature'], rel=1e-6)
    assert t > 1.5  # the sharpened head is overconfident
    z, y = predictions['train']
    logits = torch.cat([v.reshape(K, -1) for v in z], 1).t()
    labels = torch.cat([v.reshape(-1) for v in y]).long()
    keep = labels != 255
    logits, labels = logits[keep], labels[keep]
    assert int(row['test_pixels']) == labels.numel()
    nll = F.cross_entropy(logits.double(), labels)
    post_nll = F.cross_entropy(logits.double() / t, labels)
    assert float(row['NLL']) == pytest.approx(float(nll), rel=1e-5)
    assert float(row['post_NLL']) == pytest.approx(float(post_nll), rel=1e-5)
    assert float(row['post_NLL']) < float(row['NLL'])
    # accuracy: argmax, pixel accuracy and mmseg's mIoU (classes with a non-empty union)
    pred = logits.argmax(1)
    assert float(row['aAcc']) == pytest.approx(100 * float((pred == labels).double().mean()), rel=1e-9)
    ious = []
    for k in range(K):
        union = int(((pred == k) | (labels == k)).sum())
        if union:
            ious.append(int(((pred == k) & (labels == k)).sum()) / union)
    assert float(row['mIoU']) == pytest.approx(100 * sum(ious) / len(ious), rel=1e-9)
    # top-label ECE with 15 equal-width bins (lower, upper], pre and post
    for prefix, scale in (('', 1.0), ('post_', t)):
        probs = torch.softmax(logits / scale, 1)
        conf, _ = probs.max(1)
        correct = (pred == labels).double()
        bins = (conf.double() * 15).ceil().long().clamp(1, 15)
        ece = sum(abs(float(correct[bins == b].sum() - conf[bins == b].double().sum())) for b in range(1, 16))
        assert float(row[f'{prefix}ECE_15']) == pytest.approx(100 * ece / labels.numel(), abs=1e-4)
    a, c = float(row['aAcc']) / 100, 1 - float(row['ECE_15']) / 100
    assert float(row['HCS']) == pytest.approx(100 * 2 * a * c / (a + c))
    assert float(row['post_Acc']) == pytest.approx(float(row['Acc']))  # TS keeps the prediction


def test_broken_checkpoint_is_reported_and_the_others_proceed(setup, first_run):
    assert first_run['failures'] == 1
    assert len(first_run['rows']) == 2
    failures = study.read_table(str(setup['root'] / 'study.failures.csv'))
    assert len(failures) == 1
    assert failures[0]['checkpoint'] == setup['broken'] and failures[0]['stage'] == 'load-and-fit-pass'
    assert failures[0]['error']


def test_resume_skips_measured_models_without_recomputing(setup, first_run, monkeypatch, capsys):
    out = first_run['out']
    before = out.read_bytes()
    measured = []
    original = study.measure

    def spy(spec, *args):
        measured.append(spec.name)
        return original(spec, *args)

    monkeypatch.setattr(study, 'measure', spy)
    assert study.main(_args(setup, out)) == 1
    assert measured == ['fcn_r18-d16_ce_4it_tiny-voc-32x32@broken']  # only the model that failed
    assert out.read_bytes() == before  # nothing rewritten, no row added
    log = capsys.readouterr().out
    assert log.count('[study] skip wd_tiny@iter_') == 2
    assert len(study.read_table(str(setup['root'] / 'study.failures.csv'))) == 2
    # another protocol in the same table is refused
    with pytest.raises(ValueError, match='another protocol'):
        study.main(_args(setup, out) + ['--ts-method', 'grid-ece'])


def test_two_processes_give_the_same_row(setup, first_run, tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = tmp_path / 'dist.csv'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}',
           osp.join(ROOT, 'tools', 'calibration_study.py'), '--models',
           f"{setup['config']}:{setup['work_dir'] / 'iter_2.pth'}", '--out', str(out), '--log-every', '0',
           '--launcher', 'pytorch']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    (dist,) = study.read_table(str(out))
    single = first_run['rows'][1]
    assert dist['world_size'] == '2' and single['world_size'] == '1'
    assert dist['model_id'] == single['model_id']
    for key in ('fit_images', 'fit_pixels', 'test_images', 'test_pixels'):
        assert dist[key] == single[key]
    numeric = [k for k in single if k == 'T' or k == 'mIoU' or k == 'aAcc' or k.startswith(('ECE', 'post_', 'cwCE',
                                                                                                'MCE', 'NLL'))]
    assert len(numeric) > 100
    for key in numeric:
        assert float(dist[key]) == pytest.approx(float(single[key]), rel=1e-6, abs=1e-9), key


# ------------------------------------------------------------------------------------------------ pieces
def _fit_batches(seed=0, t_true=2.5, n_images=4):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_images):
        z = torch.randn(500, 4, generator=g) * 3
        y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
        batches.append((z * t_true, y))
    return batches


@pytest.mark.parametrize('method', ['nll', 'grid-ece', 'grid-nll'])
def test_fit_temperature_equals_temperature_scaling(method):
    batches = _fit_batches()
    got = study.fit_temperature(batches, num_classes=4, method=method, device=torch.device('cpu'))
    if method == 'nll':
        ref = TemperatureScaling(num_classes=4).fit(batches, ignore_index=None)
        assert got['T'] == pytest.approx(ref.fit_info['temperature'], rel=1e-9)
        assert got['T'] == pytest.approx(2.5, rel=0.1)
    else:
        ref = TemperatureScaling(num_classes=4, method='grid', grid_metric=method[5:]).fit(batches, ignore_index=None)
        assert got['T'] == ref.fit_info['temperature']
    assert got['fit_pixels'] == 2000
    assert got['fit_nll_post'] <= got['fit_nll_pre']


def test_append_row_keeps_every_row_and_extends_the_header(tmp_path):
    path = str(tmp_path / 't.csv')
    study.append_row(path, {'a': 1, 'b': 0.1})
    study.append_row(path, {'a': 2, 'b': float('nan')})
    study.append_row(path, {'a': 3, 'c': 'x,y'})  # a new column: rewritten with the union of columns
    rows = study.read_table(path)
    assert rows == [{'a': '1', 'b': '0.1', 'c': ''}, {'a': '2', 'b': 'nan', 'c': ''}, {'a': '3', 'b': '', 'c': 'x,y'}]
    with open(path, 'a') as f:  # a crash in the middle of a line
        f.write('4,0.')
    assert len(study.read_table(path)) == 3
    study.append_row(path, {'a': 5, 'b': 1e-300, 'c': ''})
    with open(path, newline='') as f:
        assert [r['a'] for r in csv.DictReader(f)] == ['1', '2', '3', '5']
    assert float(study.read_table(path)[-1]['b']) == 1e-300  # repr: exact round trip


def test_work_dir_checkpoints_sort_by_training_length(tmp_path):
    for name in ('iter_10.pth', 'iter_2.pth', 'best_mIoU.pth', 'iter_300.pth'):
        (tmp_path / name).write_bytes(b'')
    all_ckpts = [osp.basename(p) for p in study.work_dir_checkpoints(str(tmp_path), True)]
    assert all_ckpts == ['iter_2.pth', 'iter_10.pth', 'iter_300.pth']
    assert [osp.basename(p) for p in study.work_dir_checkpoints(str(tmp_path), False)] == ['iter_300.pth']
    assert study.parse_model_pair('a/b.py:c/d:e.pth') == ('a/b.py', 'c/d:e.pth')
    with pytest.raises(ValueError, match='CONFIG.py:CHECKPOINT'):
        study.parse_model_pair('model.pth')
