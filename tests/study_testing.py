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
from typing import Dict, List, Sequence

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


def synthetic_study(path, n: int = 25, seed: int = 0) -> List[dict]:
    """A study table shaped like the study's: errors driven by a latent miscalibration per model, smaller and
    noisier after TS, more bin-dependent after TS (written as a plain CSV, as older tables were)."""
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
