"""The loop that the naive per-pixel references of the loss tests share (imported by module name)."""
import math
from typing import Callable, Sequence

import numpy as np

IGNORE = 255


def per_pixel_reference(logits, target, pixel_loss: Callable[[Sequence[float], int, tuple], float], *,
                        ignore_index: int = IGNORE) -> np.ndarray:
    """``pixel_loss(row, y, (n, h, w))`` at every labelled pixel by explicit loops in float64 (``row``: the
    pixel's logits), NaN at ignored pixels."""
    z = logits.detach().double().numpy()
    out = np.full(target.shape, np.nan)
    for n, h, w in np.ndindex(*target.shape):
        y = int(target[n, h, w])
        if y != ignore_index:
            out[n, h, w] = pixel_loss(z[n, :, h, w], y, (n, h, w))
    return out


def logsumexp(row: Sequence[float]) -> float:
    return math.log(sum(math.exp(v) for v in row))
