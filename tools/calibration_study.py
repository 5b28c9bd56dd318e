"""Measure many segmentation models before and after temperature scaling: one table row per model.

    python tools/calibration_study.py --work-dirs 'work_dirs/compare/*' [--all-checkpoints] --out study.csv
    python tools/calibration_study.py --models CONFIG.py:CHECKPOINT.pth ... --out study.csv [--cfg-options k=v]
    torchrun --nproc_per_node N tools/calibration_study.py ... --launcher pytorch

The per-pixel version of the benchmark study of calibration (Tao et al., ICLR 2024). For every model:

1. **Split.** By default the config's ``val_dataloader`` dataset is cut into two complementary parts with
   :class:`~calibseg.datasets.HeldOutSplit` (``held_out=--fit-fraction``, ``seed=--split-seed``): temperature
   scaling is fitted on the ``held_out`` part and every metric is measured on the other (``train``) part, so no
   image is used for both. ``--fit-split KEY --test-split KEY`` use two dataloaders of the config instead
   (e.g. ``val_dataloader`` and ``test_dataloader``).
2. **Fit.** One inference pass over the fit part keeps at most ``--fit-pixels-per-image`` labelled pixels per
   image (drawn with a ``torch.Generator`` seeded from ``--split-seed`` and the image index, so the selection does
   not depend on the number of processes), then :class:`~calibseg.calibrators.TemperatureScaling`'s optimisers run
   on them: ``--ts-method nll`` (default; safeguarded Newton on ``1/T``) or ``grid-ece`` / ``grid-nll`` (the
   benchmark's grid ``T in {0.1, ..., 10.0}`` selecting ECE-15 or NLL). Under torchrun every optimiser pass sums
   its statistics over the processes. Memory: ``fit images * fit-pixels-per-image * (4 K + 8)`` bytes spread
   over the processes (K classes), e.g. 725 VOC images * 16384 pixels * 92 B = 1.1 GB.
3. **Test.** ONE inference pass over the test part accumulates, per pixel and at once, the calibration statistics
   of the logits (``pre``) and of ``logits / T`` (``post``) and a confusion matrix; each process handles every
   W-th image (mmengine's ``DefaultSampler`` without padding) and the fixed-size statistics are summed across
   processes, so the row does not depend on the number of processes.

Columns (one row per model; calibration errors, AUROC, AURC, Acc, mIoU, aAcc and HCS in percent):

* identity: ``model_id`` (SHA-256 prefix of the checkpoint's bytes + of the config's text), ``name``,
  ``method`` (the method field of the config name), ``loss`` (the decode head's loss types), ``iteration``,
  ``max_iters``, ``decode_channels``, ``backbone``, ``num_classes``, ``config``, ``checkpoint``,
  ``checkpoint_bytes``;
* protocol: ``protocol_id``, ``fit_split``, ``test_split``, ``ts_method``, ``fit_images``, ``fit_pixels``,
  ``test_images``, ``test_pixels``, ``T``, ``fit_nll_pre``, ``fit_nll_post``, ``ts_passes``, ``world_size``,
  ``device``, ``started_at``, ``finished_at``, ``seconds``;
* accuracy: ``mIoU`` (mmseg's IoUMetric convention: mean over the classes whose union of prediction and label
  is not empty), ``aAcc`` (pixel accuracy);
* pre-TS: every key of :func:`~calibseg.functional.calibration.calibration_metrics` (``ECE_{B}``,
  ``ECE_em_{B}``, ``cwCE_{B}``, ``cwCE_em_{B}``, ``MCE_{B}`` for ``B`` in 5, 10, 15, 20, 25, 50, 100, 200, 500;
  ``ECE`` (= ``ECE_15``), ``RMSCE_15``, ``dECE_15``, ``OE_15``, ``UE_15``, ``KSCE``, ``KDECE``, ``MMCE``,
  ``smECE``, ``SECE``, ``AUROC``, ``AURC``, ``NLL``, ``Brier``, ``Acc``) and the harmonic calibration score
  ``HCS = 2 a (1 - e) / (a + 1 - e)`` with ``a`` the pixel accuracy and ``e`` the top-label equal-width ECE-15,
  both as fractions (reported x100);
* post-TS: the same keys prefixed ``post_`` (``post_HCS`` uses ``post_ECE_15``; accuracy is unchanged by TS).

Resumable and safe: the table is appended one row at a time (flushed and fsynced) as soon as a model is measured;
models whose ``model_id`` is already in the table are skipped; a model that fails is reported in
``<out stem>.failures.csv`` (and retried by the next run) and the others proceed; the exit status is 1 if any
model failed. A table measured under another protocol (split, TS method, options) is refused. With pyarrow
installed, ``<out stem>.parquet`` is rewritten from the CSV after each row. Multi-class heads only.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import glob
import hashlib
import io
import json
import math
import os
import os.path as osp
import re
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction

from calibseg.utils.distributed import sum_across_ranks

DEFAULT_FIT_PIXELS = 16384
TS_METHODS = ('nll', 'grid-ece', 'grid-nll')
CHECKPOINT_PATTERN = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


# ----------------------------------------------------------------------------------------------------- models
@dataclass
class ModelSpec:
    """One model of the study: a config and a checkpoint; ``group`` names its run (work dir or config)."""

    config: str
    checkpoint: str
    group: str

    @property
    def name(self) -> str:
        return f'{self.group}@{osp.splitext(osp.basename(self.checkpoint))[0]}'


def work_dir_config(work_dir: str) -> str:
    """The config that mmengine dumped into ``work_dir`` (the one ``.py`` file at its top level)."""
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    if len(configs) == 1:
        return configs[0]
    preferred = osp.join(work_dir, osp.basename(osp.normpath(work_dir)) + '.py')
    if preferred in configs:
        return preferred
    if not configs:
        raise FileNotFoundError(f'no config (*.py) in work dir {work_dir}')
    raise ValueError(f'several configs in work dir {work_dir}: {[osp.basename(c) for c in configs]}; name the '
                     'model with --models CONFIG:CHECKPOINT instead')


def work_dir_checkpoints(work_dir: str, all_checkpoints: bool) -> List[str]:
    """``iter_*.pth`` / ``epoch_*.pth`` of ``work_dir`` by training length: all of them, or the longest."""
    found = []
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        match = CHECKPOINT_PATTERN.match(osp.basename(path))
        if match:
            found.append((match.group(1), int(match.group(2)), path))
    found.sort()
    paths = [p for _, _, p in found]
    return paths if all_checkpoints else paths[-1:]


def parse_model_pair(text: str) -> Tuple[str, str]:
    """``CONFIG.py:CHECKPOINT`` (split after ``.py``) into its two paths."""
    head, sep, tail = text.partition('.py:')
    if not sep or not tail:
        raise ValueError(f'--models entries must be CONFIG.py:CHECKPOINT, got {text!r}')
    return head + '.py', tail


def read_model_list(path: str) -> List[Tuple[str, str]]:
    """Pairs from a text/CSV file: one ``CONFIG CHECKPOINT`` (or ``CONFIG,CHECKPOINT`` or ``CONFIG.py:CKPT``) a
    line; blank lines, ``#`` comments and a ``config,checkpoint`` header are skipped."""
    pairs = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split('#', 1)[0].strip()
            if not line or line.replace(' ', '').lower() == 'config,checkpoint':
                continue
            parts = [p for p in re.split(r'[,\s]+', line) if p]
            if len(parts) == 1:
                pairs.append(parse_model_pair(parts[0]))
            elif len(parts) == 2:
                pairs.append((parts[0], parts[1]))
            else:
                raise ValueError(f'{path}:{number}: expected CONFIG CHECKPOINT, got {line!r}')
    return pairs


def discover_models(models: Sequence[str], model_list: Optional[str], work_dirs: Sequence[str],
                    all_checkpoints: bool) -> List[ModelSpec]:
    """Every model named on the command line, in order, without duplicates (same checkpoint and config)."""
    specs: List[ModelSpec] = []
    pairs = [parse_model_pair(m) for m in models]
    if model_list:
        pairs += read_model_list(model_list)
    for config, ckpt in pairs:
        specs.append(ModelSpec(config, ckpt, osp.splitext(osp.basename(config))[0]))
    for pattern in work_dirs:
        dirs = sorted(d for d in glob.glob(pattern) if osp.isdir(d))
        if not dirs:
            print(f'[study] warning: no work directory matches {pattern!r}', flush=True)
        for work_dir in dirs:
            ckpts = work_dir_checkpoints(work_dir, all_checkpoints)
            if not ckpts:
                print(f'[study] warning: no iter_*.pth / epoch_*.pth in {work_dir}; skipped', flush=True)
                continue
            try:
                config = work_dir_config(work_dir)
            except (FileNotFoundError, ValueError) as err:
                config = f'<{err}>'
            group = osp.basename(osp.normpath(work_dir))
            specs.extend(ModelSpec(config, c, group) for c in ckpts)
    seen, unique = set(), []
    for spec in specs:
        key = (osp.realpath(spec.config), osp.realpath(spec.checkpoint))
        if key not in seen:
            seen.add(key)
            unique.append(spec)
    return unique


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def model_id(spec: ModelSpec) -> str:
    """``<16 hex of the checkpoint's SHA-256>-<8 hex of the config text's SHA-256>``: the weights and how they are
    built, independent of where the files lie (moving a work directory does not re-measure it)."""
    if not osp.isfile(spec.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {spec.checkpoint}')
    if not osp.isfile(spec.config):
        raise FileNotFoundError(f'config not found: {spec.config}')
    with open(spec.config, 'rb') as f:
        config_hash = hashlib.sha256(f.read()).hexdigest()
    return f'{file_sha256(spec.checkpoint)[:16]}-{config_hash[:8]}'


# ------------------------------------------------------------------------------------------------------ table
def read_table(path: str) -> List[Dict[str, str]]:
    """Rows of a CSV table (``[]`` if absent); an incomplete last line (a crash mid-write) is dropped."""
    if not osp.isfile(path) or osp.getsize(path) == 0:
        return []
    with open(path, newline='') as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return []
        return [dict(zip(header, r)) for r in reader if len(r) == len(header)]


def _format(value: Any) -> str:
    if value is None:
        return ''
    if isinstance(value, float):
        return repr(value)  # shortest string that reads back to the same double ('nan', 'inf' included)
    return str(value)


def _csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator='\n').writerow([_format(v) for v in values])
    return buffer.getvalue()


def _atomic_write(path: str, text: str) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', newline='') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_row(path: str, row: Dict[str, Any]) -> None:
    """Append ``row`` to the CSV at ``path`` and make it durable before returning.

    The first row writes the header. A row with columns the header lacks rewrites the file with the union of
    columns (a temporary file replaced atomically, so a crash leaves the old or the new table, never a mix);
    otherwise the line is appended, flushed and fsynced. Missing values are written empty.
    """
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    header: Optional[List[str]] = None
    if osp.isfile(path) and osp.getsize(path) > 0:
        with open(path, newline='') as f:
            header = next(csv.reader(f), None)
        with open(path, 'rb') as f:
            f.seek(-1, os.SEEK_END)
            complete = f.read(1) == b'\n'
    if header is None:
        _atomic_write(path, _csv_line(list(row)) + _csv_line(list(row.values())))
        return
    new = [k for k in row if k not in header]
    if new or not complete:
        columns = header + new
        rows = read_table(path)
        text = _csv_line(columns) + ''.join(_csv_line([r.get(c) for c in columns]) for r in rows)
        _atomic_write(path, text + _csv_line([row.get(c) for c in columns]))
        return
    with open(path, 'a', newline='') as f:
        f.write(_csv_line([row.get(c) for c in header]))
        f.flush()
        os.fsync(f.fileno())


def write_parquet(csv_path: str) -> Optional[str]:
    """Rewrite ``<stem>.parquet`` from the CSV when pyarrow is importable; returns its path (or ``None``)."""
    try:
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq
    except ImportError:
        return None
    out = osp.splitext(csv_path)[0] + '.parquet'
    tmp = f'{out}.tmp{os.getpid()}'
    pq.write_table(pa_csv.read_csv(csv_path), tmp)
    os.replace(tmp, out)
    return out


def failures_path(out: str) -> str:
    return osp.splitext(out)[0] + '.failures.csv'


# ----------------------------------------------------------------------------------------- distributed helpers
def dist_info() -> Tuple[int, int]:
    from mmengine.dist import get_dist_info
    return get_dist_info()


def agree(error: Optional[BaseException], stage: str) -> None:
    """Collective check after a stage that runs independently on every process: if any process failed, raise a
    ``StageError`` on every process (so none waits forever in a later collective)."""
    from mmengine.dist import all_gather_object
    rank, world = dist_info()
    mine = None if error is None else f'{type(error).__name__}: {error}'
    messages = all_gather_object(mine) if world > 1 else [mine]
    failed = [(r, m) for r, m in enumerate(messages) if m is not None]
    if failed:
        text = '; '.join(m if world == 1 else f'rank {r}: {m}' for r, m in failed)
        raise StageError(stage, text) from error


class StageError(RuntimeError):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def broadcast(obj: Any) -> Any:
    from mmengine.dist import broadcast_object_list
    _, world = dist_info()
    if world == 1:
        return obj
    box = [obj]
    broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------------------------------------ config, data
def load_config(spec: ModelSpec, cfg_options: Optional[Dict[str, Any]]) -> Config:
    if not osp.isfile(spec.config):
        raise FileNotFoundError(f'config not found: {spec.config}')
    cfg = Config.fromfile(spec.config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def describe_config(cfg: Config) -> Dict[str, Any]:
    """Identifying factors read from the config (empty where absent)."""
    model = cfg.get('model', {})
    head = model.get('decode_head', {})
    if isinstance(head, (list, tuple)):
        head = head[-1]
    losses = head.get('loss_decode', {})
    losses = losses if isinstance(losses, (list, tuple)) else [losses]
    backbone = model.get('backbone', {})
    depth = backbone.get('depth')
    return {
        'loss': '+'.join(str(loss.get('type', '')) for loss in losses),
        'max_iters': (cfg.get('train_cfg') or {}).get('max_iters', ''),
        'decode_channels': head.get('channels', ''),
        'backbone': f"{backbone.get('type', '')}{'-' + str(depth) if depth else ''}",
        'num_classes': head.get('num_classes', ''),
    }


def split_datasets(cfg: Config, args: argparse.Namespace) -> Dict[str, Tuple[dict, str]]:
    """``{'fit': (dataloader cfg, description), 'test': (...)}`` for the protocol chosen in ``args``."""
    if args.fit_split:
        out = {}
        for part, key in (('fit', args.fit_split), ('test', args.test_split)):
            if not cfg.get(key):
                raise KeyError(f'the config has no {key!r} (from --{part}-split)')
            out[part] = (dict(cfg[key]), key)
        return out
    source = cfg.get(args.split_source)
    if not source:
        raise KeyError(f'the config has no {args.split_source!r} to split (--split-source)')
    out = {}
    for part, held in (('fit', 'held_out'), ('test', 'train')):
        loader = dict(source)
        loader['dataset'] = dict(type='HeldOutSplit', dataset=source['dataset'], part=held,
                                 held_out=args.fit_fraction, seed=args.split_seed)
        out[part] = (loader, f'{args.split_source}:HeldOutSplit(part={held},held_out={args.fit_fraction},'
                             f'seed={args.split_seed})')
    return out


def build_loader(loader_cfg: dict, num_workers: Optional[int]):
    """A dataloader over the whole dataset split across processes without padding (each image exactly once)."""
    from mmengine.runner import Runner
    loader_cfg = dict(loader_cfg)
    loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=False, round_up=False, seed=0)
    if num_workers is not None:
        loader_cfg['num_workers'] = num_workers
        if num_workers == 0:
            loader_cfg['persistent_workers'] = False
    return Runner.build_dataloader(loader_cfg, seed=0)


def check_dataset_paths(loader_cfgs: Sequence[dict]) -> None:
    from calibseg.utils.run_setup import check_data_paths
    for cfg in loader_cfgs:
        check_data_paths(Config({'val_dataloader': cfg}))


def build_model(cfg: Config, checkpoint: str, device: torch.device, weights_only: bool):
    """The segmentor in eval mode with the checkpoint's weights (strict: every key must match)."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmengine.utils import import_modules_from_strings
    from mmseg.registry import MODELS

    from calibseg.compat import trusted

    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model = MODELS.build(cfg.model)  # init_weights() is not called: no pretrained download
    ckpt = load_checkpoint(model, checkpoint if weights_only else trusted(checkpoint), map_location='cpu',
                           strict=True)
    model.to(device).eval()
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    return model, meta


def iter_predictions(model, loader, log_every: int = 0, label: str = '') -> Iterator[Tuple[int, Any]]:
    """``(dataset index, data sample)`` of this process's images, with ``seg_logits``, ``pred_sem_seg`` and
    ``gt_sem_seg`` (mmseg's ``test_step`` output, logits resized to the label map)."""
    rank, world = dist_info()
    position = 0
    start = time.time()
    with torch.no_grad():
        for batch in loader:
            for sample in model.test_step(batch):
                yield rank + position * world, sample
                position += 1
                if log_every and rank == 0 and position % log_every == 0:
                    print(f'[study]   {label}: {position * world} images ({time.time() - start:.1f} s)', flush=True)


def sample_tensors(sample, ignore_index: int, num_classes: int) -> Tuple[torch.Tensor, torch.Tensor]:
    logits = sample.seg_logits.data
    labels = sample.gt_sem_seg.data
    labels = labels[0] if labels.dim() == 3 else labels
    if logits.dim() != 3 or logits.shape[0] != num_classes:
        raise ValueError(f'seg_logits of shape {tuple(logits.shape)} in {sample.metainfo.get("img_path")}: the '
                         f'study needs multi-class logits (K={num_classes}, K >= 2) of shape (K, H, W)')
    return logits, labels


# ------------------------------------------------------------------------------------------ temperature scaling
def collect_fit_pixels(model, loader, *, num_classes: int, ignore_index: int, max_pixels: int, seed: int,
                       log_every: int) -> Tuple[List[Tuple[torch.Tensor, torch.Tensor]], int]:
    """This process's fit pixels: ``[(z (P, K) float32, y (P,))]`` per image, at most ``max_pixels`` labelled
    pixels per image (0: all), picked by a generator seeded with ``(seed, image index)``; and its image count."""
    batches, images = [], 0
    for index, sample in iter_predictions(model, loader, log_every, 'fit'):
        logits, labels = sample_tensors(sample, ignore_index, num_classes)
        images += 1
        z = logits.reshape(num_classes, -1)
        y = labels.reshape(-1).long()
        keep = (y != ignore_index).nonzero().squeeze(1)
        if max_pixels and keep.numel() > max_pixels:
            g = torch.Generator().manual_seed((seed << 32) + index)
            pick = torch.randperm(keep.numel(), generator=g)[:max_pixels].to(keep.device)
            keep = keep[pick].sort().values
        if keep.numel():
            batches.append((z[:, keep].t().float().contiguous(), y[keep]))
    return batches, images


def fit_temperature(batches: List[Tuple[torch.Tensor, torch.Tensor]], *, num_classes: int, method: str,
                    device: torch.device) -> Dict[str, Any]:
    """Fit ``T`` on the fit pixels of every process with TemperatureScaling's optimisers, each pass summed over
    the processes (the same ``T`` on all of them)."""
    from calibseg.calibrators import DEFAULT_GRID, grid_statistics
    from calibseg.calibrators.base import PixelPasses, newton_inverse_temperature
    from calibseg.calibrators.temperature_scaling import _nll_stats

    def passes(dtype: torch.dtype) -> Optional[PixelPasses]:
        if not batches:
            return None
        return PixelPasses(lambda: iter(batches), num_classes=num_classes, ignore_index=None, dtype=dtype,
                           device=device)

    count = sum_across_ranks(torch.tensor([float(sum(y.numel() for _, y in batches))], dtype=torch.float64))
    n = float(count[0])
    if n == 0:
        raise ValueError('the fit split has no labelled pixel')
    if method == 'nll':
        source = passes(torch.float64)

        def stats(beta: float) -> Tuple[float, float, float]:
            local = _nll_stats(source, beta) if source is not None else (0.0, 0.0, 0.0)
            return tuple(sum_across_ranks(torch.tensor(local, dtype=torch.float64)).tolist())

        beta, info = newton_inverse_temperature(stats, t_min=0.01, t_max=100.0, tol=1e-8, max_iter=100)
        return {'fit_pixels': int(n), 'T': 1.0 / beta, 'fit_nll_pre': info['objective_at_start'] / n,
                'fit_nll_post': info['objective'] / n, 'ts_passes': info['passes']}
    source = passes(torch.float32)
    grid = list(DEFAULT_GRID)
    keys = ('count', 'confidence', 'correct', 'nll')
    if source is not None:
        local = grid_statistics(source, grid, num_bins=15)
        vector = torch.cat([local[k].double().flatten() for k in keys])
    else:
        vector = torch.zeros(len(grid) * 15 * 3 + len(grid), dtype=torch.float64)
    total = sum_across_ranks(vector)
    size = len(grid) * 15
    conf, correct, nll = total[size:2 * size].view(-1, 15), total[2 * size:3 * size].view(-1, 15), total[3 * size:]
    ece = (correct - conf).abs().sum(1) / n
    values = ece if method == 'grid-ece' else nll / n
    best = int(torch.argmin(values))
    at_one = min(range(len(grid)), key=lambda i: abs(grid[i] - 1.0))
    return {'fit_pixels': int(n), 'T': float(grid[best]), 'fit_nll_pre': float(nll[at_one] / n),
            'fit_nll_post': float(nll[best] / n), 'ts_passes': 1}


# ------------------------------------------------------------------------------------------------- measurement
def test_statistics(model, loader, *, num_classes: int, ignore_index: int, temperature: float, log_every: int):
    """One pass over this process's test images: pre/post-TS calibration statistics and the confusion matrix."""
    from calibseg.functional.calibration import CalibrationStatistics

    def new():
        return CalibrationStatistics(num_classes, input_type='logits', ignore_index=ignore_index, classwise=True)

    pre, post = new(), new()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.float64)
    images = 0
    for _, sample in iter_predictions(model, loader, log_every, 'test'):
        logits, labels = sample_tensors(sample, ignore_index, num_classes)
        name = sample.metainfo.get('img_path')
        pre.update(logits, labels, name=name)
        post.update(logits / temperature, labels, name=name)
        pred = sample.pred_sem_seg.data.reshape(-1)
        y = labels.reshape(-1).long()
        valid = y != ignore_index
        confusion += torch.bincount((y[valid] * num_classes + pred[valid]).cpu(),
                                    minlength=num_classes * num_classes).double()
        images += 1
    return pre, post, confusion, images


def accuracy_metrics(confusion: torch.Tensor) -> Dict[str, float]:
    """``mIoU`` (mean IoU over classes with a non-empty union, mmseg's convention) and ``aAcc``, in percent."""
    k = int(round(math.sqrt(confusion.numel())))
    cm = confusion.view(k, k)  # rows: label, columns: prediction
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return {'mIoU': 100.0 * float((tp[present] / union[present]).mean()),
            'aAcc': 100.0 * float(tp.sum() / cm.sum())}


def harmonic_calibration_score(acc_pct: float, ece_pct: float) -> float:
    """``HCS = 2 a (1 - e) / (a + 1 - e)`` (Tao et al., 2024) of accuracy ``a`` and ECE ``e`` given in percent;
    returned in percent."""
    a, c = acc_pct / 100.0, 1.0 - ece_pct / 100.0
    return 100.0 * (2 * a * c / (a + c) if a + c > 0 else 0.0)


def measure(spec: ModelSpec, args: argparse.Namespace, device: torch.device) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(facts, metrics)`` of one model: what the config, checkpoint and protocol say, and the measured values
    (``metrics`` only on rank 0). Raises :class:`StageError` on every process when any of them failed."""
    from calibseg.functional.calibration import DEFAULT_BINS, calibration_metrics

    rank, _ = dist_info()
    error = None
    try:
        cfg = load_config(spec, args.cfg_options)
        facts = describe_config(cfg)
        splits = split_datasets(cfg, args)
        check_dataset_paths([splits['fit'][0], splits['test'][0]])
        model, meta = build_model(cfg, spec.checkpoint, device, args.weights_only)
        head = getattr(model, 'decode_head', None)
        num_classes = int(getattr(head, 'num_classes', 0))
        if num_classes < 2 or getattr(head, 'out_channels', num_classes) != num_classes:
            raise ValueError('the study handles multi-class decode heads (out_channels == num_classes >= 2) only')
        fit_loader = build_loader(splits['fit'][0], args.num_workers)
        test_loader = build_loader(splits['test'][0], args.num_workers)
        batches, fit_images = collect_fit_pixels(model, fit_loader, num_classes=num_classes,
                                                 ignore_index=args.ignore_index, max_pixels=args.fit_pixels_per_image,
                                                 seed=args.split_seed, log_every=args.log_every)
    except Exception as err:  # reported once every process has reached this point
        error = err
        if args.debug:
            traceback.print_exc()
    agree(error, 'load-and-fit-pass')
    try:  # the same data reach every process here, so an error is raised on all of them
        ts = fit_temperature(batches, num_classes=num_classes, method=args.ts_method, device=device)
    except Exception as err:
        raise StageError('fit', f'{type(err).__name__}: {err}') from err
    del batches
    try:
        pre, post, confusion, test_images = test_statistics(
            model, test_loader, num_classes=num_classes, ignore_index=args.ignore_index, temperature=ts['T'],
            log_every=args.log_every)
    except Exception as err:
        error = err
        if args.debug:
            traceback.print_exc()
    agree(error, 'test-pass')
    counts = torch.tensor([fit_images, test_images], dtype=torch.float64)
    cpu = torch.device('cpu')
    sizes = [pre.state_size, post.state_size, confusion.numel(), counts.numel()]
    total = sum_across_ranks(torch.cat([pre.to_tensor(cpu), post.to_tensor(cpu), confusion, counts]))
    parts = torch.split(total, sizes)
    iteration = CHECKPOINT_PATTERN.match(osp.basename(spec.checkpoint))
    facts['iteration'] = int(iteration.group(2)) if iteration else meta.get('iter', '')
    facts.update(fit_split=splits['fit'][1], test_split=splits['test'][1], ts_method=args.ts_method,
                 fit_images=int(parts[3][0]), fit_pixels=ts.pop('fit_pixels'), test_images=int(parts[3][1]),
                 test_pixels=int(parts[0][0]))  # the first scalar of the state: the number of pixels
    facts.update(ts)
    if rank != 0:
        return facts, {}
    try:
        pre, post = pre.from_tensor(parts[0]), post.from_tensor(parts[1])
        metrics = accuracy_metrics(parts[2])
        pre_metrics = calibration_metrics(pre, bins=DEFAULT_BINS)
        post_metrics = calibration_metrics(post, bins=DEFAULT_BINS)
    except Exception as err:  # rank 0 alone: no collective is pending
        raise StageError('metrics', f'{type(err).__name__}: {err}') from err
    metrics.update(pre_metrics)
    metrics['HCS'] = harmonic_calibration_score(metrics['aAcc'], pre_metrics['ECE_15'])
    metrics.update({f'post_{k}': v for k, v in post_metrics.items()})
    metrics['post_HCS'] = harmonic_calibration_score(metrics['aAcc'], post_metrics['ECE_15'])
    return facts, metrics


# -------------------------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_argument_group('models')
    src.add_argument('--models', nargs='+', default=[], metavar='CONFIG.py:CHECKPOINT',
                     help='config and checkpoint pairs')
    src.add_argument('--model-list', help='text/CSV file with one "CONFIG CHECKPOINT" pair a line')
    src.add_argument('--work-dirs', nargs='+', default=[], metavar='GLOB',
                     help="mmengine work directories (globs, quoted: 'work_dirs/compare/*'): the config dumped "
                          'there and its newest iter_*.pth')
    src.add_argument('--all-checkpoints', action='store_true',
                     help='every iter_*.pth / epoch_*.pth of a work dir is a model (training length as a factor)')
    parser.add_argument('--out', required=True, help='the CSV table (appended; a .parquet beside it with pyarrow)')
    proto = parser.add_argument_group('protocol')
    proto.add_argument('--split-source', default='val_dataloader',
                       help='dataloader of the config split into fit/test parts (default: val_dataloader)')
    proto.add_argument('--fit-fraction', type=float, default=0.5,
                       help='fraction of the split source used to fit TS (HeldOutSplit held_out; default 0.5)')
    proto.add_argument('--split-seed', type=int, default=0, help='HeldOutSplit seed and pixel-subsampling seed')
    proto.add_argument('--fit-split', help='fit on this dataloader of the config instead (with --test-split)')
    proto.add_argument('--test-split', help='measure on this dataloader of the config (with --fit-split)')
    proto.add_argument('--ts-method', choices=TS_METHODS, default='nll',
                       help='nll: minimise NLL (Newton); grid-ece / grid-nll: T in {0.1..10} minimising ECE-15 / NLL')
    proto.add_argument('--fit-pixels-per-image', type=int, default=DEFAULT_FIT_PIXELS,
                       help=f'labelled pixels kept per fit image (0: all; default {DEFAULT_FIT_PIXELS})')
    proto.add_argument('--ignore-index', type=int, default=255)
    proto.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of every config')
    run = parser.add_argument_group('run')
    run.add_argument('--weights-only', action='store_true',
                     help="load checkpoints with torch's safe loader (default: trusted, full unpickling)")
    run.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    run.add_argument('--num-workers', type=int, default=None, help="dataloader workers (default: the config's)")
    run.add_argument('--log-every', type=int, default=100, help='progress line every N images (0: none)')
    run.add_argument('--debug', action='store_true', help='print tracebacks of failing models')
    run.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    run.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if bool(args.fit_split) != bool(args.test_split):
        parser.error('--fit-split and --test-split go together')
    if not 0.0 < args.fit_fraction < 1.0:
        parser.error(f'--fit-fraction must lie in (0, 1), got {args.fit_fraction}')
    if args.fit_pixels_per_image < 0:
        parser.error('--fit-pixels-per-image must be >= 0')
    if not (args.models or args.model_list or args.work_dirs):
        parser.error('name models with --models, --model-list or --work-dirs')
    return args


def protocol(args: argparse.Namespace) -> Dict[str, Any]:
    """What makes two rows comparable; a table holds one protocol."""
    split = ({'fit': args.fit_split, 'test': args.test_split} if args.fit_split else
             {'source': args.split_source, 'fit_fraction': args.fit_fraction, 'seed': args.split_seed})
    return {'split': split, 'ts_method': args.ts_method, 'fit_pixels_per_image': args.fit_pixels_per_image,
            'ignore_index': args.ignore_index, 'cfg_options': dict(args.cfg_options or {})}


def protocol_id(args: argparse.Namespace) -> str:
    text = json.dumps(protocol(args), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def method_name(config: str) -> str:
    from calibseg.apis.experiment import method_name as name
    return name(config)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def setup(args: argparse.Namespace) -> torch.device:
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    import calibseg  # noqa: F401  (registers HeldOutSplit, the losses and the metrics)
    from calibseg.compat import setup_distributed

    setup_distributed(Config(dict()), args.launcher)
    if args.device:
        device = torch.device(args.device)
    elif torch.cuda.is_available():
        device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', 0)) if args.launcher == 'pytorch' else 0)
    else:
        device = torch.device('cpu')
    return device


def plan(specs: List[ModelSpec], args: argparse.Namespace) -> List[Tuple[ModelSpec, Optional[str], str]]:
    """On rank 0: ``(spec, model_id or None, 'todo' | 'skip' | error)`` for every model."""
    rows = read_table(args.out)
    pid = protocol_id(args)
    others = sorted({r.get('protocol_id', '') for r in rows} - {pid})
    if others:
        raise ValueError(f'{args.out} holds rows of another protocol ({others}, this run: {pid}, '
                         f'{json.dumps(protocol(args), default=str)}): write this study to another --out')
    done = {r.get('model_id') for r in rows}
    out = []
    for spec in specs:
        try:
            mid = model_id(spec)
        except (OSError, ValueError) as err:
            out.append((spec, None, f'{type(err).__name__}: {err}'))
            continue
        out.append((spec, mid, 'skip' if mid in done else 'todo'))
    return out


def report_failure(args: argparse.Namespace, spec: ModelSpec, mid: Optional[str], stage: str, message: str) -> None:
    print(f'[study] FAILED {spec.name} ({stage}): {message}', flush=True)
    append_row(failures_path(args.out), {'time': now(), 'model_id': mid or '', 'name': spec.name,
                                         'config': spec.config, 'checkpoint': spec.checkpoint, 'stage': stage,
                                         'error': message})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the study; returns the number of models that failed (the exit status is 1 if any did)."""
    args = parse_args(argv)
    device = setup(args)
    rank, world = dist_info()
    specs = discover_models(args.models, args.model_list, args.work_dirs, args.all_checkpoints)
    work = broadcast(plan(specs, args) if rank == 0 else None)
    todo = sum(status == 'todo' for _, _, status in work)
    if rank == 0:
        print(f'[study] {len(work)} models, {todo} to measure, {sum(s == "skip" for _, _, s in work)} already in '
              f'{args.out}; protocol {protocol_id(args)}; {world} process(es) on {device}', flush=True)
    failures = measured = position = 0
    for spec, mid, status in work:
        if status == 'skip':
            if rank == 0:
                print(f'[study] skip {spec.name}: already measured ({mid})', flush=True)
            continue
        if status != 'todo':
            failures += 1
            if rank == 0:
                report_failure(args, spec, mid, 'discover', status)
            continue
        position += 1
        if rank == 0:
            print(f'[study] ({position}/{todo}) {spec.name}: {spec.checkpoint}', flush=True)
        started, clock = now(), time.time()
        try:
            values = measure(spec, args, device)
        except StageError as err:
            failures += 1
            if rank == 0:
                report_failure(args, spec, mid, err.stage, str(err))
            continue
        if rank != 0:
            continue
        facts, metrics = values
        row = {'model_id': mid, 'name': spec.name, 'method': method_name(spec.config)}
        row.update({k: facts.pop(k) for k in ('loss', 'iteration', 'max_iters', 'decode_channels', 'backbone',
                                              'num_classes')})
        row.update(config=spec.config, checkpoint=spec.checkpoint, checkpoint_bytes=osp.getsize(spec.checkpoint),
                   protocol_id=protocol_id(args))
        row.update(facts)
        row.update(world_size=world, device=str(device), started_at=started, finished_at=now(),
                   seconds=round(time.time() - clock, 3))
        row.update(metrics)
        append_row(args.out, row)
        write_parquet(args.out)
        measured += 1
        print(f"[study]   T={row['T']:.4f}  mIoU {row['mIoU']:.2f}  ECE_15 {row['ECE_15']:.3f} -> "
              f"{row['post_ECE_15']:.3f}  NLL {row['NLL']:.4f} -> {row['post_NLL']:.4f}  "
              f"({row['test_images']} test images, {row['test_pixels']} pixels, {row['seconds']:.1f} s)", flush=True)
    if rank == 0:
        print(f'[study] done: {measured} measured, {failures} failed'
              + (f' (see {failures_path(args.out)})' if failures else '') + f'; table: {args.out}', flush=True)
    return failures


if __name__ == '__main__':
    sys.exit(1 if main() else 0)
