"""Local temperature scaling (Ding, Han, Liu & Niethammer, ICCV 2021, "Local Temperature Scaling for Probability
Calibration").

A small convolutional network predicts a positive temperature per pixel from the logits (and optionally the
image) and the calibrated logits are ``z(x) / T(x)``. The prediction ``argmax_k z_k(x)`` is unchanged at every
pixel (``T(x) > 0``). The network is fitted by minimising the per-pixel NLL of ``softmax(z(x) / T(x))`` with Adam
over minibatches of images.

Architecture (a compact stand-in for the paper's tree-like network, not the authors' exact design): a 3x3 stem
convolution on ``[z; image]``, then parallel 3x3 branches with dilations ``(1, 2, 4)`` (a growing receptive
field), concatenated and mapped by a 1x1 convolution to one channel ``t(x)``, and

    T(x) = act(t(x)) + min_temperature,   act = softplus (default) or exp.

The last convolution starts at zero weight and the bias ``act^{-1}(1 - min_temperature)``, so a fresh calibrator
is the identity (``T == 1`` everywhere) and training starts from uncalibrated logits. The other convolutions are
initialised like PyTorch's default (uniform, fan-in scaled) from a private generator seeded with ``init_seed``
(no global RNG). ``fit`` continues from the current parameters.

Memory: one minibatch of images and its activations (``hidden_channels * (1 + len(dilations))`` maps of the
image size); there is no pixel cache: the whole image is needed for the convolutions.
"""
import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import skip_init

from ..utils.validation import (
    check_choice,
    check_int,
    check_labels,
    check_non_negative,
    check_positive_float,
    check_positive_int,
)
from .base import BaseCalibrator
from .data import DataSource, check_logits, make_stream, unpack_batch

__all__ = ['LocalTemperatureScaling', 'image_at_logits_size']

_ACTIVATIONS = ('softplus', 'exp')


def image_at_logits_size(inputs: Tensor, size: Sequence[int]) -> Tensor:
    """The (normalised) input images ``(N, C, H, W)`` average-pooled to the logit map's ``(h, w)``: LTS's image
    input (``use_image=True``).

    Example:
        >>> image_at_logits_size(torch.arange(16.).view(1, 1, 4, 4), (2, 2)).flatten().tolist()
        [2.5, 4.5, 10.5, 12.5]
    """
    size = tuple(int(s) for s in size)
    if tuple(inputs.shape[2:]) == size:
        return inputs
    return F.adaptive_avg_pool2d(inputs, size)


class LocalTemperatureScaling(BaseCalibrator):
    """Per-pixel temperature ``T(x)`` predicted by a small CNN, ``z(x) -> z(x) / T(x)``.

    Args:
        num_classes: K (the logit channels fed to the network).
        use_image: also feed the image (concatenated with the logits); ``forward`` and ``fit`` then need it,
            normalised as the segmentor's input (e.g. mmseg's data preprocessor mean/std) and of the logits' size.
        image_channels: channels of the image.
        hidden_channels: channels of the stem and of each branch.
        dilations: dilations of the parallel 3x3 branches.
        activation: ``'softplus'`` or ``'exp'``, the map from the network output to ``T - min_temperature``.
        min_temperature: lower bound of ``T(x)``, in ``(0, 1)``.
        init_seed: seed of the private generator initialising the convolutions.
    """

    method = 'LocalTemperatureScaling'

    def __init__(self, *, num_classes: int, use_image: bool = False, image_channels: int = 3,
                 hidden_channels: int = 16, dilations: Sequence[int] = (1, 2, 4), activation: str = 'softplus',
                 min_temperature: float = 0.05, init_seed: int = 0) -> None:
        super().__init__(num_classes=num_classes)
        if not isinstance(use_image, bool):
            raise ValueError(f'use_image must be a bool, got {use_image!r}')
        self.use_image = use_image
        self.image_channels = check_positive_int('image_channels', image_channels)
        self.hidden_channels = check_positive_int('hidden_channels', hidden_channels)
        dilations = tuple(dilations)
        if not dilations:
            raise ValueError('dilations must contain at least one dilation')
        self.dilations = tuple(check_positive_int('dilations entries', d) for d in dilations)
        if activation not in _ACTIVATIONS:
            raise ValueError(f'activation must be one of {_ACTIVATIONS}, got {activation!r}')
        self.activation = activation
        self.min_temperature = check_positive_float('min_temperature', min_temperature)
        if self.min_temperature >= 1.0:
            raise ValueError(f'min_temperature must be < 1 (T starts at 1), got {min_temperature!r}')
        if isinstance(init_seed, bool) or not isinstance(init_seed, int):
            raise ValueError(f'init_seed must be an int, got {init_seed!r}')
        self.init_seed = init_seed
        in_channels = num_classes + (image_channels if use_image else 0)
        hidden = self.hidden_channels
        self.stem = skip_init(nn.Conv2d, in_channels, hidden, 3, padding=1)
        self.branches = nn.ModuleList(skip_init(nn.Conv2d, hidden, hidden, 3, padding=d, dilation=d)
                                      for d in self.dilations)
        self.head = skip_init(nn.Conv2d, hidden * len(self.dilations), 1, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise: default-like uniform convolutions from ``init_seed``, and ``T == 1`` everywhere."""
        generator = torch.Generator().manual_seed(self.init_seed)
        with torch.no_grad():
            for conv in [self.stem, *self.branches]:
                bound = 1.0 / math.sqrt(conv.weight[0].numel())  # PyTorch's default conv init bound
                conv.weight.copy_(torch.empty(conv.weight.shape).uniform_(-bound, bound, generator=generator))
                conv.bias.copy_(torch.empty(conv.bias.shape).uniform_(-bound, bound, generator=generator))
            self.head.weight.zero_()
            start = 1.0 - self.min_temperature
            self.head.bias.fill_(math.log(math.expm1(start)) if self.activation == 'softplus' else math.log(start))
        self.is_fitted.fill_(False)

    def get_config(self) -> Dict[str, Any]:
        return {'num_classes': self.num_classes, 'use_image': self.use_image,
                'image_channels': self.image_channels, 'hidden_channels': self.hidden_channels,
                'dilations': list(self.dilations), 'activation': self.activation,
                'min_temperature': self.min_temperature, 'init_seed': self.init_seed}

    def describe(self) -> str:
        head = (f'num_classes={self.num_classes}, use_image={self.use_image}, hidden_channels='
                f'{self.hidden_channels}, dilations={self.dilations}, activation={self.activation!r}')
        if not self.fitted:
            return head + ', unfitted'
        info = self.fit_info
        if 'temperature_mean' in info:
            head += (f", T(x) on the fit data: mean {info['temperature_mean']:.4f}, "
                     f"range [{info['temperature_min']:.4f}, {info['temperature_max']:.4f}]")
        return head + ', fitted'

    def _check_inputs(self, logits: Tensor, image: Optional[Tensor], name: str) -> None:
        check_logits(f'logits{name}', logits, self.num_classes)
        if logits.dim() != 4:
            raise ValueError(f'logits{name} must have shape (N, K, H, W) for local temperature scaling, got '
                             f'{tuple(logits.shape)}')
        if not self.use_image:
            if image is not None:
                raise ValueError(f'image{name} was given but the calibrator was built with use_image=False')
            return
        if image is None:
            raise ValueError(f'image{name} is required: the calibrator was built with use_image=True')
        if not isinstance(image, Tensor) or not image.is_floating_point():
            raise ValueError(f'image{name} must be a floating-point tensor, got '
                             f'{getattr(image, "dtype", type(image).__name__)}')
        expected = (logits.shape[0], self.image_channels) + tuple(logits.shape[2:])
        if tuple(image.shape) != expected:
            raise ValueError(f'image{name} of shape {tuple(image.shape)} does not match the logits: expected '
                             f'{expected} (image_channels={self.image_channels} and the logits size)')
        if not bool(torch.isfinite(image).all()):
            raise ValueError(f'image{name} contains NaN or infinite values')

    def _temperature(self, logits: Tensor, image: Optional[Tensor]) -> Tensor:
        dtype = self.stem.weight.dtype
        x = logits.to(dtype)
        if self.use_image:
            x = torch.cat([x, image.to(dtype)], dim=1)
        h = F.relu(self.stem(x))
        h = torch.cat([F.relu(branch(h)) for branch in self.branches], dim=1)
        t = self.head(h)
        t = F.softplus(t) if self.activation == 'softplus' else t.exp()
        return t + self.min_temperature

    def temperature_map(self, logits: Tensor, image: Optional[Tensor] = None) -> Tensor:
        """The per-pixel temperature ``T(x)``, shape ``(N, 1, H, W)`` (works unfitted too: then ``T == 1``)."""
        self._check_inputs(logits, image, '')
        return self._temperature(logits, image)

    def forward(self, logits: Tensor, image: Optional[Tensor] = None) -> Tensor:
        """Calibrated logits ``z(x) / T(x)``, shape ``(N, K, H, W)``.

        Raises:
            RuntimeError: not fitted.
            ValueError: invalid logits or image (missing with ``use_image=True``, given without it).
        """
        self._check_fitted()
        self._check_inputs(logits, image, '')
        return logits / self._temperature(logits, image).to(logits.dtype)

    def fit(self, data: DataSource, labels: Optional[Tensor] = None, images: Optional[Tensor] = None, *,
            ignore_index: Optional[int] = 255, epochs: int = 10, lr: float = 1e-2, weight_decay: float = 0.0,
            loss_resolution: str = 'native', align_corners: bool = False) -> 'LocalTemperatureScaling':
        """Train the temperature network with Adam, one step per minibatch of the source.

        Each step minimises the mean NLL over the minibatch's labelled pixels ``V``,
        ``(1/|V|) sum_{x in V} -log softmax(r(z / T)(x))_{y(x)}``; minibatches without labelled pixels are skipped.
        ``r`` depends on ``loss_resolution``:

        * ``'native'``: the identity; the labels have the logits' size (e.g. sampled at the logit pixels).
        * ``'labels'``: the bilinear resize of the calibrated logits to the labels' size (``align_corners`` as
          the segmentor's), i.e. mmseg's ``predict_by_feat``: ``T(x)`` is computed on the native logits and the
          loss is taken on the logits the test metrics see, at every labelled pixel (how
          :class:`~calibseg.models.segmentors.CalibratedEncoderDecoder` applies it).

        Args:
            data: logits ``(N, K, h, w)`` (with ``labels`` and, for ``use_image``, ``images``; one minibatch), or a
                re-iterable source of ``(logits, labels)`` / ``(logits, labels, image)`` minibatches.
            labels: labels ``(N, H, W)`` of in-memory logits (``(H, W) == (h, w)`` unless ``loss_resolution`` is
                ``'labels'``).
            images: images ``(N, C, h, w)`` of in-memory logits.
            ignore_index: label value excluded from the loss.
            epochs: passes over the source.
            lr: Adam's learning rate.
            weight_decay: Adam's L2 weight decay.
            loss_resolution: ``'native'`` or ``'labels'`` (above).
            align_corners: of the bilinear resize (``'labels'`` only).

        Returns:
            ``self``; ``fit_info`` holds ``num_pixels`` (labelled pixels per epoch) and ``num_images``,
            ``steps``, ``epoch_nll`` (pixel-weighted mean of the minibatch losses in each epoch, each taken before
            its step), ``loss_resolution`` and ``temperature_mean`` / ``temperature_min`` / ``temperature_max``:
            the mean, min and max of ``T(x)`` over **every pixel of the temperature maps** (the native logit
            pixels, labelled or not: the map the calibrator applies at test time) of the last epoch's minibatches
            with labelled pixels, as computed during training (before each step).

        Example:
            >>> g = torch.Generator().manual_seed(0)
            >>> z, y = torch.randn(2, 3, 4, 4, generator=g), torch.randint(0, 3, (2, 8, 8), generator=g)
            >>> lts = LocalTemperatureScaling(num_classes=3).fit(z, y, epochs=2, loss_resolution='labels')
            >>> lts.fit_info['num_pixels'], lts.fit_info['steps']
            (128, 2)
        """
        epochs = check_positive_int('epochs', epochs)
        lr = check_positive_float('lr', lr)
        weight_decay = check_non_negative('weight_decay', weight_decay)
        ignore_index = check_int('ignore_index', ignore_index, allow_none=True)
        check_choice('loss_resolution', loss_resolution, ('native', 'labels'))
        resize = loss_resolution == 'labels'
        stream = make_stream(data, labels, images)
        optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        device = self._device
        steps = 0
        epoch_nll = []
        pixels = images_seen = 0
        t_stats: Tuple[float, float, float] = (0.0, math.inf, -math.inf)
        for epoch in range(epochs):
            loss_sum, pixels, images_seen = 0.0, 0, 0
            t_sum, t_count, t_min, t_max = 0.0, 0, math.inf, -math.inf
            for index, batch in enumerate(stream()):
                logits, target, image = unpack_batch(batch, index)
                self._check_inputs(logits, image, f' of batch {index}')
                if resize:
                    shape = None if not isinstance(target, Tensor) or target.dim() != 3 \
                        or target.shape[0] != logits.shape[0] else tuple(target.shape)
                    if shape is None:
                        raise ValueError(f'labels of batch {index} must have shape (N, H, W) with N = '
                                         f'{logits.shape[0]} (the logits\' batch), got '
                                         f'{tuple(getattr(target, "shape", ()))}')
                else:
                    shape = logits.shape[:1] + logits.shape[2:]
                check_labels(f'labels of batch {index}', target, self.num_classes, ignore_index=ignore_index,
                             shape=shape)
                logits = logits.to(device)
                target = target.to(device).long()
                image = image.to(device) if image is not None else None
                count = target.numel() if ignore_index is None else int((target != ignore_index).sum())
                images_seen += logits.shape[0]
                if count == 0:
                    continue
                temperature = self._temperature(logits, image)
                calibrated = logits.to(temperature.dtype) / temperature
                if resize:
                    calibrated = F.interpolate(calibrated, size=target.shape[1:], mode='bilinear',
                                               align_corners=align_corners)
                loss = F.cross_entropy(calibrated, target, reduction='sum',
                                       ignore_index=-100 if ignore_index is None else ignore_index) / count
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
                loss_sum += float(loss.detach()) * count
                pixels += count
                if epoch == epochs - 1:
                    t = temperature.detach()
                    t_sum, t_count = t_sum + float(t.double().sum()), t_count + t.numel()
                    t_min, t_max = min(t_min, float(t.min())), max(t_max, float(t.max()))
            if pixels == 0:
                raise ValueError('the data source yielded no labelled pixels (empty, or every label is '
                                 f'ignore_index={ignore_index})')
            epoch_nll.append(loss_sum / pixels)
            if epoch == epochs - 1:
                t_stats = (t_sum / t_count, t_min, t_max)
        self.fit_info = {'num_pixels': pixels, 'num_images': images_seen, 'epochs': epochs, 'steps': steps,
                         'epoch_nll': epoch_nll, 'loss_resolution': loss_resolution,
                         'temperature_mean': t_stats[0], 'temperature_min': t_stats[1],
                         'temperature_max': t_stats[2]}
        self._mark_fitted()
        return self
