"""mmengine's ``AmpOptimWrapper`` that also trains on CPU (bfloat16 autocast)."""
from typing import Optional, Union

import torch
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch.optim import Optimizer


@OPTIM_WRAPPERS.register_module()
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """``AmpOptimWrapper`` on an accelerator; bfloat16 autocast without a loss scaler on CPU.

    mmengine's ``AmpOptimWrapper`` refuses to start without an accelerator (its loss scaler is CUDA's). On CPU,
    PyTorch's autocast computes in bfloat16, whose exponent range is float32's, so no loss scaling is needed: this
    wrapper then runs the forward pass under ``torch.autocast('cpu', dtype=torch.bfloat16)`` (mmengine's
    ``autocast``) and steps the optimizer directly (a disabled ``GradScaler``, so checkpoints keep the same keys).
    calibseg's losses compute in float32 under autocast (:mod:`calibseg.functional.losses`).

    Args:
        optimizer: the wrapped optimizer (built by mmengine from the config's ``optimizer``).
        loss_scale: ``AmpOptimWrapper``'s loss scaling on an accelerator (ignored on CPU).
        dtype: autocast dtype (``'float16'``/``'bfloat16'`` on an accelerator; only ``'bfloat16'`` on CPU,
            which is also the default there).
        accumulative_counts, clip_grad: as in mmengine's ``OptimWrapper``.

    Example:
        >>> optim_wrapper = dict(type='MixedPrecisionOptimWrapper', dtype='bfloat16',
        ...                      optimizer=dict(type='SGD', lr=0.01))
    """

    def __init__(self, optimizer: Optimizer, *, loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Optional[Union[str, torch.dtype]] = None, accumulative_counts: int = 1,
                 clip_grad: Optional[dict] = None) -> None:
        if is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available():
            super().__init__(loss_scale=loss_scale, dtype=dtype, optimizer=optimizer,
                             accumulative_counts=accumulative_counts, clip_grad=clip_grad)
            return
        OptimWrapper.__init__(self, optimizer=optimizer, accumulative_counts=accumulative_counts,
                              clip_grad=clip_grad)
        if isinstance(dtype, str):
            if dtype not in self.valid_dtypes:
                raise ValueError(f'dtype must be one of {self.valid_dtypes}, got {dtype!r}')
            dtype = getattr(torch, dtype)
        if dtype not in (None, torch.bfloat16):
            raise ValueError(f'CPU autocast computes in bfloat16 only, got dtype={dtype}')
        self.cast_dtype = torch.bfloat16
        self._scale_update_param = None
        self.loss_scaler = torch.amp.GradScaler('cpu', enabled=False)
