"""The base classes of the post-hoc calibrators (see :mod:`calibseg.calibrators.data` for the data conventions)."""
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ..utils.validation import check_bounds, check_positive_int
from .data import DataSource, PixelPasses, check_binary_logits, check_logits, make_stream

__all__ = ['BaseCalibrator', 'BinaryCalibrator', 'LogTemperature', 'check_temperature_range']


def check_temperature_range(method: str, temperature: Tensor, low: float, high: float) -> None:
    """Raise ``ValueError`` unless every temperature lies in ``[low, high]`` (up to float32 rounding of ``log T``)."""
    t = temperature.detach().double()
    slack = 1e-5
    if not bool(((t >= low * (1 - slack)) & (t <= high * (1 + slack))).all()):
        raise ValueError(f'{method} temperature(s) {t.flatten()[:5].tolist()} outside the fitted range '
                         f'[{low}, {high}]: the parameters are corrupt or hand-edited')


class LogTemperature:
    """Mixin of the temperature calibrators: ``T = exp(log_temperature)`` (always positive), searched in
    ``[t_min, t_max]``; loaded parameters outside that range are refused by :meth:`check_parameters`.

    Call :meth:`_init_temperature` in ``__init__`` (after ``nn.Module.__init__``); override
    :meth:`_temperature_range` when the search range is another one (e.g. a grid's).
    """

    def _init_temperature(self, t_min: float, t_max: float, shape: tuple = ()) -> None:
        self.t_min, self.t_max = check_bounds('t_min', t_min, 't_max', t_max)
        self.log_temperature = nn.Parameter(torch.zeros(shape))

    @property
    def temperature(self) -> Tensor:
        """The fitted temperature(s): a 0-d tensor, or ``(K,)`` for class-wise temperatures."""
        return self.log_temperature.exp()

    def _temperature_range(self):
        return self.t_min, self.t_max

    def check_parameters(self) -> None:
        super().check_parameters()
        check_temperature_range(self.method, self.temperature, *self._temperature_range())


class BaseCalibrator(nn.Module):
    """A post-hoc calibrator: ``fit(...)`` on validation logits, then ``forward(logits)`` returns calibrated logits.

    Subclasses set ``method`` (the name written by :func:`~calibseg.calibrators.io.save_calibrator`, equal to the
    class name), implement ``fit``, ``_calibrate``, ``get_config`` and ``describe``. The ``is_fitted`` buffer
    travels with ``state_dict``, so a loaded calibrator knows whether it was fitted; ``fit_info`` (not saved)
    holds the pixel counts, passes and objective values of the last ``fit``.

    Args:
        num_classes: K, the number of logit channels (1 for the binary calibrators).
    """

    method: str = ''

    def __init__(self, *, num_classes: int) -> None:
        super().__init__()
        self.num_classes = check_positive_int('num_classes', num_classes)
        self.register_buffer('is_fitted', torch.tensor(False))
        self.fit_info: Dict[str, Any] = {}

    @property
    def fitted(self) -> bool:
        """Whether ``fit`` (or ``load_state_dict`` of a fitted calibrator) has set the parameters."""
        return bool(self.is_fitted)

    def _mark_fitted(self) -> None:
        self.is_fitted.fill_(True)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f'{type(self).__name__} is not fitted: call fit(...) or load a fitted state_dict '
                               'before calibrating logits')

    @property
    def _device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device('cpu')

    def check_parameters(self) -> None:
        """Raise ``ValueError`` unless the parameters are sane (checked on every file load): here, every
        floating-point parameter and buffer finite; subclasses add their ranges (e.g. ``T`` in its bounds)."""
        for name, tensor in list(self.named_parameters()) + list(self.named_buffers()):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f'{self.method} parameter {name} holds NaN or infinite values')

    def get_config(self) -> Dict[str, Any]:
        """The keyword arguments that rebuild this calibrator (without its fitted state)."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line with the fitted values (or ``unfitted``)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.describe()

    def _calibrate(self, logits: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, logits: Tensor) -> Tensor:
        """Calibrated logits of the same shape as ``logits`` (``(N, K, *spatial)`` or ``(P, K)``).

        Raises:
            RuntimeError: the calibrator is not fitted.
            ValueError: invalid logits (see :func:`~calibseg.calibrators.data.check_logits`).
        """
        self._check_fitted()
        check_logits('logits', logits, self.num_classes)
        return self._calibrate(logits)

    def _passes(self, data: DataSource, labels: Optional[Tensor], *, ignore_index: Optional[int],
                max_pixels_per_image: Optional[int], generator: Optional[torch.Generator], cache: bool,
                binary: bool = False, dtype: torch.dtype = torch.float64, allow_empty: bool = False
                ) -> PixelPasses:
        return PixelPasses(make_stream(data, labels), num_classes=self.num_classes, ignore_index=ignore_index,
                           max_pixels_per_image=max_pixels_per_image, generator=generator, cache=cache,
                           dtype=dtype, device=self._device, binary=binary, allow_empty=allow_empty)


class BinaryCalibrator(BaseCalibrator):
    """Base of the calibrators of one-channel heads (``num_classes = 1``, labels in ``{0, 1}``).

    They take **logits**. mmseg's one-channel heads store sigmoid *probabilities* in ``seg_logits`` (saturating
    to exactly 0 or 1 in float32), so a caller either keeps the pre-sigmoid logits (preferred) or converts with
    ``torch.logit(p.double().clamp(eps, 1 - eps))``, which cannot recover saturated values.
    Logits may be ``(N, 1, *spatial)``, ``(P, 1)``, or ``(N, H, W)`` / ``(P,)`` without the channel dimension;
    ``forward`` returns the input's shape.
    """

    def __init__(self) -> None:
        super().__init__(num_classes=1)

    def forward(self, logits: Tensor) -> Tensor:
        """Calibrated logits of the shape of ``logits`` (see the class docstring for the accepted shapes)."""
        self._check_fitted()
        check_binary_logits('logits', logits)
        return self._calibrate(logits)

    def _binary_passes(self, data: DataSource, labels: Optional[Tensor], *, ignore_index: Optional[int],
                       max_pixels_per_image: Optional[int], generator: Optional[torch.Generator],
                       cache: bool) -> PixelPasses:
        return self._passes(data, labels, ignore_index=ignore_index, max_pixels_per_image=max_pixels_per_image,
                            generator=generator, cache=cache, binary=True)
