r"""γ-Net: a small network that maps decode-head features to a bounded, positive focal-loss γ.

.. math::
    \gamma = \gamma_{\max}\,\sigma\big(W_2\,\mathrm{ReLU}(W_1 f + b_1) + b_2\big) \in (0, \gamma_{\max})

with ``f`` the features the decode head's classifier (``conv_seg``) reads, per pixel (1x1 convolutions, i.e.
a pixel-wise MLP) or per image (the same MLP on the spatially averaged features). Wang & Golebiowski,
"Meta-Regularization for Calibration" (TMLR 2024) learn a sample-wise γ with such a meta-network; its input,
architecture and range are not specified there (see configs/gamma_net/README.md for calibseg's choices).

The last layer starts at zero weights and the bias ``logit(init_gamma / gamma_max)``, so training starts from
the constant ``γ = init_gamma`` (3.0 by default: the focal-loss baseline's value).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from calibseg.utils.validation import check_choice, check_in_range, check_positive_float, check_positive_int

__all__ = ['GammaNet', 'GAMMA_NET_PER']

GAMMA_NET_PER = ('pixel', 'image')


class GammaNet(nn.Module):
    """Features ``(N, C, h, w)`` → γ of shape ``(N, 1, h, w)`` (``per='pixel'``) or ``(N, 1, 1, 1)`` (``'image'``).

    Args:
        in_channels: channels ``C`` of the features (the decode head's ``conv_seg.in_channels``).
        per: ``'pixel'`` (one γ per feature pixel) or ``'image'`` (one γ per image).
        hidden: width of the hidden layer.
        gamma_max: upper bound ``γ_max``: γ lies in ``(0, γ_max)`` (in floating point, extreme inputs saturate the
            sigmoid to the closed interval ``[0, γ_max]``; γ = 0 is cross-entropy).
        init_gamma: γ everywhere at initialisation, in ``(0, γ_max)``.

    Raises:
        ValueError: on a bad option, naming it.
    """

    def __init__(self, in_channels: int, *, per: str = 'pixel', hidden: int = 64, gamma_max: float = 5.0,
                 init_gamma: float = 3.0) -> None:
        super().__init__()
        self.per = check_choice('gamma_net.per', per, GAMMA_NET_PER)
        self.in_channels = check_positive_int('gamma_net.in_channels', in_channels)
        self.hidden = check_positive_int('gamma_net.hidden', hidden)
        self.gamma_max = check_positive_float('gamma_net.gamma_max', gamma_max)
        init_gamma = check_in_range('gamma_net.init_gamma', init_gamma, 0.0, self.gamma_max, low_inclusive=False,
                                    high_inclusive=False)
        self.init_gamma = init_gamma
        self.layers = nn.Sequential(
            nn.Conv2d(self.in_channels, self.hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(self.hidden, 1, kernel_size=1))
        last = self.layers[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(math.log(init_gamma / (self.gamma_max - init_gamma)))

    def forward(self, features: Tensor) -> Tensor:
        """γ for ``features`` ``(N, C, h, w)``: ``(N, 1, h, w)`` or ``(N, 1, 1, 1)``, values in ``(0, γ_max)``."""
        if features.dim() != 4 or features.shape[1] != self.in_channels:
            raise ValueError(f'GammaNet expects (N, {self.in_channels}, h, w) features, got {tuple(features.shape)}')
        if self.per == 'image':
            features = features.mean(dim=(2, 3), keepdim=True)
        return self.gamma_max * torch.sigmoid(self.layers(features))

    def extra_repr(self) -> str:
        return f'per={self.per!r}, gamma_max={self.gamma_max!r}, init_gamma={self.init_gamma!r}'
