"""Synthetic data for the calibrator tests, drawn from known calibrated models with explicit generators."""
from types import SimpleNamespace
from typing import Tuple

import pytest
import torch
from torch import Tensor

IGNORE = 255


@pytest.fixture(autouse=True)
def single_thread():
    """Run these small tensor ops on one thread (faster on a shared 2-core machine); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sample_labels(logits: Tensor, generator: torch.Generator) -> Tensor:
    """Labels drawn from the calibrated model ``y ~ Categorical(softmax(logits))``, class dimension 1."""
    k = logits.shape[1]
    probs = torch.softmax(logits.double(), dim=1).movedim(1, -1).reshape(-1, k)
    y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return y.view(logits.shape[:1] + logits.shape[2:])


def calibrated_maps(n: int = 6, k: int = 5, h: int = 20, w: int = 20, *, scale: float = 3.0, seed: int = 0,
                    ignore_frac: float = 0.0) -> Tuple[Tensor, Tensor]:
    """Logit maps ``(n, k, h, w)`` of a calibrated model and labels drawn from it (some set to 255)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, k, h, w, generator=g) * scale
    y = sample_labels(z, g)
    if ignore_frac > 0:
        y[torch.rand(n, h, w, generator=g) < ignore_frac] = IGNORE
    return z, y


def calibrated_pixels(p: int = 20000, k: int = 5, *, scale: float = 3.0, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Flat logits ``(p, k)`` of a calibrated model and labels ``(p,)`` drawn from it."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(p, k, generator=g) * scale
    return z, sample_labels(z, g)


def batches_of(*tensors: Tensor, size: int):
    """A re-iterable source: a function returning a fresh iterator over minibatches of ``size`` images."""
    def batches():
        for start in range(0, tensors[0].shape[0], size):
            yield tuple(t[start:start + size] for t in tensors)
    return batches


@pytest.fixture
def synth() -> SimpleNamespace:
    """The data helpers of this folder, as a fixture (the test folders are not packages)."""
    return SimpleNamespace(IGNORE=IGNORE, sample_labels=sample_labels, calibrated_maps=calibrated_maps,
                           calibrated_pixels=calibrated_pixels, batches_of=batches_of)
