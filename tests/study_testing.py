"""Helpers of the calibration-study tests (tests/test_study, tests/test_tools, tests/test_fault_injection)."""
from __future__ import annotations

import csv
import itertools
import math
import os
import os.path as osp
import socket
import subprocess
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from calibseg_testing import DEMO_CONFIG, ROOT, tiny_run_options

K = 21
BINS = (5, 10, 15, 20, 25, 50, 100, 200, 500)
CONFIG_NAME = 'fcn_r18-d16_ce_4it_tiny-voc-32x32.py'


def make_study_models(root, voc_root: str, sharpen: Sequence[float] = (1.0, 4.0)) -> Dict[str, object]:
    """A work dir ``root/wd_tiny`` with a dumped tiny config and one checkpoint ``iter_<i>.pth`` per entry of
    ``sharpen`` (different weights; by default the second with 4x sharper logits, so its T is far from 1), plus a
    broken checkpoint ``root/broken.pth``."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import calibseg  # noqa: F401

    work_dir = root / 'wd_tiny'
    work_dir.mkdir()
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(tiny_run_options(voc_root))
    cfg.merge_from_dict({'model.decode_head.channels': 16, 'model.auxiliary_head.channels': 8})
    config = str(work_dir / CONFIG_NAME)
    cfg.dump(config)
    init_default_scope('mmseg')
    for it, factor in enumerate(sharpen, 1):
        torch.manual_seed(it)
        model = MODELS.build(cfg.model)
        with torch.no_grad():
            model.decode_head.conv_seg.weight.mul_(factor)
        torch.save({'meta': {'iter': it}, 'state_dict': model.state_dict()}, work_dir / f'iter_{it}.pth')
    broken = root / 'broken.pth'
    broken.write_bytes(b'not a checkpoint')
    return dict(root=root, config=config, work_dir=work_dir, broken=str(broken), cfg=cfg)


def mmseg_predictions(cfg, checkpoint: str, dataset_cfg: dict) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """``(logits (K, H, W) per image, labels (H, W) per image)`` of every image of ``dataset_cfg``, computed with
    mmseg's own ``test_step`` (not calibseg's inference loop)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)['state_dict'])
    model.eval()
    dataset = DATASETS.build(dataset_cfg)
    logits, labels = [], []
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = model.test_step(pseudo_collate([dataset[i]]))[0]
            logits.append(sample.seg_logits.data)
            labels.append(sample.gt_sem_seg.data[0])
    return logits, labels


def pooled(logits: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], ignore_index: int = 255):
    """``(z (P, K) float64, y (P,))``: the labelled pixels of all images."""
    k = logits[0].shape[0]
    z = torch.cat([v.reshape(k, -1) for v in logits], 1).t().double()
    y = torch.cat([v.reshape(-1) for v in labels]).long()
    keep = y != ignore_index
    return z[keep], y[keep]


def direct_metrics(z: torch.Tensor, y: torch.Tensor, temperature: float = 1.0) -> Dict[str, float]:
    """mIoU, aAcc (classes with a non-empty union), NLL and the top-label ECE with 15 equal-width bins
    ``(lower, upper]`` of ``z / temperature``, counted here by hand; percent like the study's columns."""
    import torch.nn.functional as F

    pred = z.argmax(1)
    ious = []
    for c in range(z.shape[1]):
        union = int(((pred == c) | (y == c)).sum())
        if union:
            ious.append(int(((pred == c) & (y == c)).sum()) / union)
    probs = torch.softmax(z / temperature, 1)
    conf = probs.max(1).values
    correct = (pred == y).double()
    bins = (conf * 15).ceil().long().clamp(1, 15)
    ece = sum(abs(float(correct[bins == b].sum() - conf[bins == b].sum())) for b in range(1, 16))
    return {'mIoU': 100 * sum(ious) / len(ious), 'aAcc': 100 * float(correct.mean()),
            'NLL': float(F.cross_entropy(z / temperature, y)), 'ECE_15': 100 * ece / y.numel()}


def study_tool_command(*args: str, nproc: int = 1) -> List[str]:
    """``python tools/calibration_study.py ARGS`` (under torchrun with ``nproc`` > 1)."""
    tool = osp.join(ROOT, 'tools', 'calibration_study.py')
    if nproc == 1:
        return [sys.executable, tool, *args]
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return [sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}', f'--master_port={port}',
            tool, *args, '--launcher', 'pytorch']


def run_tool(cmd: List[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1'))


FAMILIES = ('ECE', 'ECE_em', 'cwCE', 'cwCE_em', 'MCE')
SCALARS = ('RMSCE_15', 'dECE_15', 'KSCE', 'KDECE', 'MMCE', 'smECE', 'SECE', 'NLL', 'Brier', 'AUROC', 'AURC', 'HCS')


def synthetic_study(path, n: int = 25, seed: int = 0, shift: bool = False) -> List[dict]:
    """A study table shaped like the study's: errors driven by a latent miscalibration per model, smaller and
    noisier after TS, more bin-dependent after TS (written as a plain CSV, as older tables were); with ``shift``
    also the robustness columns (the drop driven by the same latent miscalibration, plus noise)."""
    rng = np.random.default_rng(seed)
    methods = ['ce', 'focal', 'ls', 'mbls', 'mdca']
    rows = []
    for i in range(n):
        miscal = rng.uniform(1, 10)
        miou = rng.uniform(20, 60)
        row = {'model_id': f'id{i}', 'name': f'run{i % 7}@iter_{100 * (1 + i % 3)}', 'method': methods[i % 5],
               'loss': 'CrossEntropyLoss', 'iteration': 100 * (1 + i % 3), 'decode_channels': 32 * (1 + i % 4),
               'fit_split': 'val:held_out', 'test_split': 'val:train', 'ts_method': 'grid-ece',
               'T': rng.uniform(0.7, 2.0), 'mIoU': miou, 'aAcc': miou + 30}
        for stage, scale in (('', 1.0), ('post_', 0.3)):
            for family in FAMILIES:
                for b in BINS:
                    spread = 0.02 if stage == '' else 0.2  # post-TS values depend more on the bin count
                    row[f'{stage}{family}_{b}'] = scale * miscal * (1 + spread * math.log(b / 15)) + \
                        rng.normal(0, 0.1 + 0.5 * (stage == 'post_') * b / 500)
            for key in SCALARS:
                row[f'{stage}{key}'] = scale * miscal + rng.normal(0, 1.0)
            row[f'{stage}ECE'] = row[f'{stage}ECE_15']
        row['backbone'] = 'ResNetV1c-18'
        if shift:
            row['shift_corruptions'] = 'gaussian_noise+fog'
            row['shift_severity'] = 3
            row['mIoU_drop'] = 2 * miscal + rng.normal(0, 4.0)
            row['shift_mIoU'] = miou - row['mIoU_drop']
            for stage in ('', 'post_'):
                for key in SCALARS + ('ECE_15', 'cwCE_15'):
                    row[f'{stage}shift_{key}'] = row[f'{stage}{key}'] * 1.5 + rng.normal(0, 1.0)
        rows.append(row)
    rows[-1]['AUROC'] = math.nan  # undefined AUROC (all pixels right) is skipped pairwise
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)
    return rows


def naive_tau_b(x, y):
    """Kendall's tau-b by counting every pair (Kendall 1945), NaN pairs dropped."""
    pairs = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    concordant = discordant = tied_x = tied_y = 0
    for (x1, y1), (x2, y2) in itertools.combinations(pairs, 2):
        s = np.sign(x1 - x2) * np.sign(y1 - y2)
        concordant += s > 0
        discordant += s < 0
        tied_x += x1 == x2
        tied_y += y1 == y2
    n0 = len(pairs) * (len(pairs) - 1) // 2
    denominator = math.sqrt((n0 - tied_x) * (n0 - tied_y))
    return (concordant - discordant) / denominator if denominator else math.nan
