"""The epoch-level half of ASLP: the table's keys, the held-out accuracy, and the per-epoch summary.

:class:`~calibseg.models.segmentors.ASLPEncoderDecoder` owns the per-image alpha table and updates it after
every step; this hook gives it what only the runner knows:

* ``before_train``: keys the table by the training set's images (or checks that a resumed table was keyed by
  the same images), builds the held-out loader, and refuses set-ups in which ASLP would silently not run (a
  DDP wrapper that does not delegate ``train_step``, an iteration-based loop);
* ``before_train_epoch``: switches the updates on from the model's ``update_from_epoch`` (1-based) on;
* ``after_train_epoch``: measures the pixel accuracy on the held-out images (the value the next epoch's
  updates use; it is a buffer of the model, so the checkpoint written after this hook holds it), logs the
  table's mean and quantiles, and sends the scalars and a histogram to the visualizer backends.

The held-out accuracy is pooled over pixels (correct / non-ignored pixels at the original image size, with
the model's own prediction rule, for a one-channel head ``sigmoid > threshold``). Under DDP each rank
predicts every ``world_size``-th held-out image (no padding, no duplicates) and the counts are all-reduced, so
every rank gets the same value.

Config::

    aslp_val_dataloader = dict(batch_size=1, num_workers=2, dataset=dict(
        type='HeldOutSplit', part='held_out', held_out=1000, dataset=duts_tr))
    custom_hooks = [dict(type='ASLPHook', dataloader='aslp_val_dataloader')]
"""
from __future__ import annotations

import json
import os
import os.path as osp
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import all_reduce, get_rank, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop
from mmseg.registry import DATASETS, HOOKS
from torch.utils.data import DataLoader, Subset

__all__ = ['ASLPHook', 'alpha_summary', 'draw_alpha_histogram']

LOADER_KEYS = ('dataset', 'batch_size', 'num_workers')
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def alpha_summary(alpha: torch.Tensor) -> Dict[str, float]:
    """Mean, quantiles (0/25/50/75/100 %) and share of non-zero values of the table."""
    values = alpha.detach().to(torch.float64).cpu()
    if values.numel() == 0:
        return {}
    quantiles = torch.quantile(values, torch.tensor(QUANTILES, dtype=torch.float64))
    out = dict(mean=float(values.mean()))
    out.update({f'q{int(q * 100)}': float(v) for q, v in zip(QUANTILES, quantiles)})
    out['nonzero'] = float((values > 0).to(torch.float64).mean())
    return out


def draw_alpha_histogram(alpha: torch.Tensor, *, alpha_max: float, bins: int = 20, title: str = '') -> np.ndarray:
    """An RGB ``(H, W, 3)`` uint8 image of the histogram of the table over ``[0, alpha_max]``."""
    import matplotlib

    matplotlib.use('Agg', force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.0, 3.0), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(alpha.detach().to(torch.float64).cpu().numpy(), bins=bins, range=(0.0, alpha_max), color='#3b6ea8')
    ax.set_xlabel('alpha (per training image)')
    ax.set_ylabel('images')
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


@HOOKS.register_module()
class ASLPHook(Hook):
    """Run ASLP's epoch-level steps for :class:`~calibseg.models.segmentors.ASLPEncoderDecoder` (module docstring).

    Args:
        dataloader: the held-out loader: the name of a top-level config key (default ``'aslp_val_dataloader'``)
            or the dict itself, with keys ``dataset`` (required; e.g. ``HeldOutSplit(part='held_out')`` of the
            training set), ``batch_size`` (default 1) and ``num_workers`` (default 0). Its images must not be
            training images.
        reset_table: start a new all-zero table even if a loaded checkpoint brought one (fine-tuning on another
            training set); by default a loaded table must be keyed by the current training images.
        histogram_bins: bins of the histogram sent to the visualizer.
        dump_table: also write ``<out_dir>/alpha_epoch<E>_rank<R>.json`` (keys, alpha, acc_val, step counts)
            after every epoch, on the main process.
        dump_all_ranks: with ``dump_table``, every rank writes its own copy (to check DDP consistency).
        out_dir: folder of the dumps; default ``<work_dir>/aslp``.

    Raises:
        ValueError: at construction, on a bad ``dataloader`` (unknown keys) or ``histogram_bins``.
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW): the checkpoint holds this epoch's accuracy

    def __init__(self, *, dataloader: Union[str, Dict[str, Any]] = 'aslp_val_dataloader', reset_table: bool = False,
                 histogram_bins: int = 20, dump_table: bool = False, dump_all_ranks: bool = False,
                 out_dir: Optional[str] = None) -> None:
        if not isinstance(dataloader, (str, dict)):
            raise ValueError(f'dataloader must be a config key name or a dict, got {type(dataloader).__name__}')
        if isinstance(dataloader, dict):
            self._check_loader_cfg(dataloader, 'ASLPHook.dataloader')
        if isinstance(histogram_bins, bool) or not isinstance(histogram_bins, int) or histogram_bins < 1:
            raise ValueError(f'histogram_bins must be an int >= 1, got {histogram_bins!r}')
        self.dataloader = dataloader
        self.reset_table = bool(reset_table)
        self.histogram_bins = histogram_bins
        self.dump_table = bool(dump_table)
        self.dump_all_ranks = bool(dump_all_ranks)
        self.out_dir = out_dir
        self._loader: Optional[DataLoader] = None

    @staticmethod
    def _check_loader_cfg(cfg: Dict[str, Any], where: str) -> None:
        unknown = sorted(set(cfg) - set(LOADER_KEYS))
        if unknown:
            raise ValueError(f'{where}: unknown key(s) {unknown}; a held-out loader takes {LOADER_KEYS} (the hook '
                             'shards the images over the ranks itself, without a sampler)')
        if 'dataset' not in cfg:
            raise ValueError(f"{where} needs a 'dataset' (e.g. HeldOutSplit(part='held_out') of the training set)")

    # ------------------------------------------------------------------------------------------ set-up
    @staticmethod
    def _segmentor(runner):
        from ...models.segmentors import ASLPEncoderDecoder

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not isinstance(model, ASLPEncoderDecoder):
            raise TypeError(f"ASLPHook needs model=dict(type='ASLPEncoderDecoder', ...), got {type(model).__name__}")
        return model

    def before_train(self, runner) -> None:
        from ...models.wrappers import TrainStepDelegatingDDP

        model = self._segmentor(runner)
        if is_model_wrapper(runner.model) and not isinstance(runner.model, TrainStepDelegatingDDP):
            raise ValueError(f'ASLP updates its table in the segmentor\'s train_step, which '
                             f'{type(runner.model).__name__}.train_step never calls: set '
                             "model_wrapper_cfg=dict(type='TrainStepDelegatingDDP') in the config")
        if not isinstance(runner.train_loop, EpochBasedTrainLoop):
            raise ValueError(f'ASLP counts epochs: use train_cfg=dict(type=\'EpochBasedTrainLoop\', ...), got '
                             f'{type(runner.train_loop).__name__}')
        train_paths = _image_paths(runner.train_dataloader.dataset, 'the training set')
        status = model.aslp_init_table(train_paths, reset=self.reset_table)
        self._loader = self._build_loader(runner, set(osp.abspath(p) for p in train_paths))
        runner.logger.info(
            f'ASLP: alpha table {status} for {len(train_paths)} training images (alpha mean '
            f'{float(model.aslp_alpha.mean()) if model.aslp_alpha.numel() else 0.0:.4f}); '
            f'{len(self._loader.dataset.dataset)} held-out images; updates from epoch {model.update_from_epoch}; '
            f'beta={model.beta:g}, eta={model.eta:g}, lambda={model.lam:g}, alpha in [0, {model.alpha_max:g}]')

    def _build_loader(self, runner, train_paths: set) -> DataLoader:
        cfg = self.dataloader
        if isinstance(cfg, str):
            found = runner.cfg.get(cfg) if getattr(runner, 'cfg', None) is not None else None
            if found is None:
                raise ValueError(f"ASLPHook(dataloader='{cfg}'): the config has no top-level '{cfg}' (the held-out "
                                 "loader, e.g. dict(batch_size=1, dataset=dict(type='HeldOutSplit', part='held_out', "
                                 '...)))')
            cfg = found
            self._check_loader_cfg(cfg, self.dataloader)
        dataset_cfg = cfg['dataset']
        dataset = DATASETS.build(dict(dataset_cfg)) if isinstance(dataset_cfg, dict) else dataset_cfg
        held_paths = _image_paths(dataset, 'the held-out set')
        overlap = sorted(set(osp.abspath(p) for p in held_paths) & train_paths)
        if overlap:
            raise ValueError(f'{len(overlap)} held-out image(s) are also training images (e.g. {overlap[:3]}): ASLP '
                             "measures accuracy on images the network does not train on; use HeldOutSplit's "
                             "complementary parts 'train' and 'held_out' with the same held_out and seed")
        shard = Subset(dataset, list(range(get_rank(), len(dataset), get_world_size())))
        return DataLoader(shard, batch_size=int(cfg.get('batch_size', 1)), shuffle=False,
                          num_workers=int(cfg.get('num_workers', 0)), collate_fn=pseudo_collate)

    # ------------------------------------------------------------------------------------------ epochs
    def before_train_epoch(self, runner) -> None:
        model = self._segmentor(runner)
        if model.aslp_set_epoch(runner.epoch) and torch.isnan(model.aslp_acc_val):
            # the first update epoch is the first epoch (or the checkpoint predates the measurement)
            model.aslp_acc_val.fill_(self.measure_accuracy(runner))

    def after_train_epoch(self, runner) -> None:
        model = self._segmentor(runner)
        acc_val = self.measure_accuracy(runner)
        model.aslp_acc_val.fill_(acc_val)
        epoch = runner.epoch + 1
        summary = alpha_summary(model.aslp_alpha)
        phase = 'updating' if model.aslp_updating else f'warm-up (updates from epoch {model.update_from_epoch})'
        runner.logger.info(
            f'ASLP epoch {epoch} [{phase}]: held-out pixel accuracy {acc_val:.4f}; alpha over '
            f'{model.aslp_alpha.numel()} images: mean {summary["mean"]:.5f}, quantiles 0/25/50/75/100% = '
            + '/'.join(f'{summary[k]:.5f}' for k in ('q0', 'q25', 'q50', 'q75', 'q100'))
            + f', non-zero {100 * summary["nonzero"]:.1f}%')
        visualizer = getattr(runner, 'visualizer', None)
        if visualizer is not None and is_main_process():
            scalars = {f'aslp/alpha_{k}': v for k, v in summary.items()}
            scalars['aslp/acc_val'] = acc_val
            visualizer.add_scalars(scalars, step=epoch)
            image = draw_alpha_histogram(model.aslp_alpha, alpha_max=model.alpha_max, bins=self.histogram_bins,
                                         title=f'ASLP alpha, epoch {epoch} (mean {summary["mean"]:.4f})')
            # a name without '/': LocalVisBackend writes <name>_<step>.png into one folder
            visualizer.add_image('aslp_alpha_histogram', image, step=epoch)
        if self.dump_table and (self.dump_all_ranks or is_main_process()):
            self._dump(runner, model, epoch, acc_val)

    @torch.no_grad()
    def measure_accuracy(self, runner) -> float:
        """Pooled pixel accuracy of the current model on the held-out images (all ranks together)."""
        from ...apis.inference import iter_seg_logits  # the one inference loop (apis sits above engine)

        if self._loader is None:
            raise RuntimeError('ASLPHook.measure_accuracy before before_train built the held-out loader')
        model = self._segmentor(runner)
        ignore_index = model.decode_head.ignore_index
        wrapper = runner.model
        was_training = wrapper.training
        wrapper.eval()
        threshold = getattr(model.decode_head, 'threshold', None)
        correct, total = 0, 0
        try:
            for item in iter_seg_logits(wrapper, self._loader, resolution='label'):
                # the model's own prediction rule (mmseg's postprocess_result): argmax, or sigmoid > threshold
                z = item.logits
                pred = z.argmax(dim=0) if z.shape[0] > 1 else (z[0].sigmoid() > threshold).long()
                gt = item.labels.to(pred.device)
                valid = gt != ignore_index
                correct += int(((pred == gt) & valid).sum())
                total += int(valid.sum())
        finally:
            wrapper.train(was_training)
        counts = torch.tensor([correct, total], dtype=torch.float64, device=model.aslp_alpha.device)
        all_reduce(counts, op='sum')
        if counts[1] <= 0:
            raise ValueError('the held-out images have no labelled pixels: ASLP cannot measure the accuracy')
        return float(counts[0] / counts[1])

    def _dump(self, runner, model, epoch: int, acc_val: float) -> None:
        out_dir = self.out_dir or osp.join(runner.work_dir, 'aslp')
        os.makedirs(out_dir, exist_ok=True)
        record = dict(epoch=epoch, rank=get_rank(), world_size=get_world_size(),
                      delegated_train_steps=int(getattr(model, 'delegated_train_steps', 0)),
                      aslp_steps=int(model.aslp_steps), acc_val=acc_val, keys=model.aslp_keys,
                      alpha=model.aslp_alpha.cpu().tolist())
        with open(osp.join(out_dir, f'alpha_epoch{epoch}_rank{get_rank()}.json'), 'w') as f:
            json.dump(record, f)


def _image_paths(dataset, what: str) -> List[str]:
    """``img_path`` of every sample of ``dataset`` (through ``get_data_info``)."""
    if not hasattr(dataset, 'get_data_info'):
        raise TypeError(f'ASLP needs {what} to expose get_data_info(i) (mmengine datasets do); got '
                        f'{type(dataset).__name__}')
    if hasattr(dataset, 'full_init'):
        dataset.full_init()
    paths = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        if 'img_path' not in info:
            raise KeyError(f'sample {i} of {what} has no img_path: ASLP keys its table by image path')
        paths.append(info['img_path'])
    return paths
