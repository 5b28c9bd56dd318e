r"""RankMixup's ranking losses, MRL and M-NDCG, adapted to per-pixel segmentation.

Noh et al., "RankMixup: Ranking-Based Mixup Training for Network Calibration", ICCV 2023. In the paper (image
classification) a mixed sample ``x~ = lambda x_i + (1 - lambda) x_pi(i)`` should be predicted with *lower*
confidence than the raw sample ``x_i``, and several mixed samples should be ranked by their mixing coefficient.
Mixed samples get no label-mixture loss: these ranking losses are their only supervision.

Segmentation (our extension; the paper has no segmentation recipe). Mixing two images mixes their label maps
pixel by pixel, so the ranking is per pixel: pixel ``p`` of mixed image ``b`` (draw ``t``) is ranked against
the same pixel ``p`` of raw image ``b`` (the image with weight ``lambda_t``). A pixel takes part only where
both sources are labelled (neither is ``ignore_index``) and carry *different* labels: where both sources agree,
the mixed pixel is not ambiguous and need not be less confident (the paper masks pairs whose two images share
the class). Masking is per pixel: the mean runs over the pixels that take part. The authors' code multiplies a
``(B,)`` mask into a ``(B, 1)`` loss, which broadcasts to ``(B, B)`` and so rescales the mean loss by the
fraction of valid pairs instead of masking each sample; we mask each sample (pixel) and average over the valid
ones only.

* MRL (one mixup), on logits, ``z^max`` the largest logit of a pixel:
  ``L_MRL = mean_{valid p} ReLU(z^max_mixed(p) - z^max_raw(p) + m)``; neither side is detached (as in the code).
* M-NDCG (several mixups): per pixel, the list [raw, mixup 1, ..., mixup T] with relevances
  ``r = [1, max(lambda_t, 1 - lambda_t), ...]`` sorted by relevance (descending; stable, so ties keep the draw
  order) and confidences ``c`` = max-softmax in the same order;
  ``DCG = sum_q c_q / log2(q + 1)``, ``IDCG = sum_q r_q / log2(q + 1)`` (``q`` = 1-based position),
  ``L_NDCG = mean_{valid p} (1 - min(DCG, IDCG) / max(DCG, IDCG))`` (penalises over- and under-confidence
  alike, as the code does). Where the two sources of mixup ``t`` share the label at pixel ``p``, the authors'
  relevance (the largest entry of the mixed one-hot label) is ``lambda_t + (1 - lambda_t) = 1``: by default
  (``same_label='keep'``) the entry stays in the list with relevance 1, and the list is sorted per pixel
  (descending relevance; ties keep the draw order, the raw image first). ``same_label='mask'`` instead *removes*
  such entries, as MRL does (positions are recounted). A mixup whose partner pixel is ignored has no relevance
  and is removed in both modes; a pixel takes part if its raw label is valid and at least one mixup entry
  remains.

Shapes: raw logits ``(B, C, *spatial)``, labels ``(B, *spatial)`` of the raw images, mixed logits
``(B, C, *spatial)`` (MRL) or ``(T, B, C, *spatial)`` (M-NDCG), permutations ``(B,)`` / ``(T, B)`` giving the
partner image of each mixed image. Half-precision inputs are computed in float32.

This module imports no OpenMMLab package.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from calibseg.utils.validation import check_non_negative

from .utils import check_logits_and_target, check_reduction, compute_dtype

__all__ = ['SAME_LABEL_MODES', 'mixup_pair_valid', 'mrl_loss', 'mndcg_loss']

Lambdas = Union[Sequence[float], Tensor]


# -------------------------------------------------------------------------------------------------
# Checks
# -------------------------------------------------------------------------------------------------
def _check_channels(logits: Tensor) -> None:
    if logits.shape[1] < 2:
        raise ValueError(f'RankMixup needs logits with at least 2 classes, got C={logits.shape[1]}')


def _check_raw(raw_logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Checks of the raw logits and labels (shared with the softmax losses); returns the non-ignored mask."""
    num_classes = raw_logits.shape[1] if isinstance(raw_logits, Tensor) and raw_logits.dim() >= 2 else 0
    return check_logits_and_target(
        raw_logits, target, ignore_index, layout='(B, C, *spatial)', check_channels=_check_channels,
        num_labels=num_classes)


def _check_mixed(mixed_logits: Tensor, raw_logits: Tensor, expected: torch.Size, layout: str) -> None:
    if not isinstance(mixed_logits, Tensor) or not mixed_logits.is_floating_point():
        raise TypeError('mixed_logits must be a floating-point tensor, '
                        f'got {getattr(mixed_logits, "dtype", mixed_logits)!r}')
    if mixed_logits.shape != expected:
        raise ValueError(f'mixed_logits must have shape {layout} = {tuple(expected)} to match raw_logits of '
                         f'shape {tuple(raw_logits.shape)}, got {tuple(mixed_logits.shape)}')
    if mixed_logits.device != raw_logits.device:
        raise ValueError(f'mixed_logits are on {mixed_logits.device} but raw_logits are on {raw_logits.device}')


def _check_permutations(permutations: Tensor, expected: tuple, batch: int, name: str) -> Tensor:
    if not isinstance(permutations, Tensor) or permutations.is_floating_point() or permutations.is_complex() \
            or permutations.dtype == torch.bool:
        raise TypeError(f'{name} must be an integer tensor, got {getattr(permutations, "dtype", permutations)!r}')
    if tuple(permutations.shape) != expected:
        raise ValueError(f'{name} must have shape {expected} (the partner image of every mixed image), '
                         f'got {tuple(permutations.shape)}')
    if permutations.numel() and (int(permutations.min()) < 0 or int(permutations.max()) >= batch):
        raise ValueError(f'{name} must hold image indices in [0, {batch}), got {permutations.tolist()}')
    return permutations.long()


def _check_lams(lams: Lambdas, num_mixups: int) -> Tensor:
    values = torch.as_tensor(lams, dtype=torch.float64)
    if values.dim() != 1 or values.numel() != num_mixups:
        raise ValueError(f'lams must hold one mixing coefficient per mixup ({num_mixups}), got {lams!r}')
    bad = ~torch.isfinite(values) | (values < 0) | (values > 1)
    if bool(bad.any()):
        raise ValueError(f'lams must lie in [0, 1], got {values.tolist()}')
    return values


# -------------------------------------------------------------------------------------------------
# Building blocks
# -------------------------------------------------------------------------------------------------
def mixup_pair_valid(target: Tensor, permutation: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Pixels of the mixed images that take part in the ranking: ``(B, *spatial)`` bool.

    Pixel ``p`` of the image mixed from ``b`` and ``permutation[b]`` takes part iff both labels are not
    ``ignore_index`` and they differ.
    """
    partner = target[permutation.to(target.device)]
    return (target != ignore_index) & (partner != ignore_index) & (target != partner)


def _max_confidence(logits: Tensor, dim: int) -> Tensor:
    """Largest softmax probability along ``dim``: ``exp(max z - logsumexp z)``."""
    return torch.exp(logits.amax(dim=dim) - torch.logsumexp(logits, dim=dim))


def _reduce(pixel_loss: Tensor, valid: Tensor, reduction: str) -> Tensor:
    """Zero the pixels that take no part, then ``'none'`` / ``'sum'`` / mean over the valid pixels.

    With no valid pixel the mean is an exact zero still connected to the graph.
    """
    pixel_loss = torch.where(valid, pixel_loss, pixel_loss.new_zeros(()))
    if reduction == 'none':
        return pixel_loss
    total = pixel_loss.sum()
    if reduction == 'sum':
        return total
    return total / max(int(valid.sum()), 1)


# -------------------------------------------------------------------------------------------------
# Losses
# -------------------------------------------------------------------------------------------------
def mrl_loss(raw_logits: Tensor, mixed_logits: Tensor, target: Tensor, permutation: Tensor, *,
             margin: float = 1.0, ignore_index: int = 255, reduction: str = 'mean') -> Tensor:
    r"""Mixup ranking loss (MRL) per pixel: the mixed pixel's top logit must stay ``margin`` below the raw one's.

    .. math::
        L = \frac{1}{|V|}\sum_{(b,p)\in V}\mathrm{ReLU}\big(\max_k \tilde z_{b,k,p} - \max_k z_{b,k,p} + m\big)

    with ``V`` the pixels where image ``b`` and its partner ``permutation[b]`` are both labelled and differ
    (see the module docstring). Noh et al., ICCV 2023 (``m = 2`` for CIFAR, ``1`` for Tiny-ImageNet).

    Args:
        raw_logits: ``(B, C, *spatial)`` logits of the raw images.
        mixed_logits: ``(B, C, *spatial)`` logits of the mixed images, image ``b`` mixed from raw ``b`` (weight
            ``lambda``) and raw ``permutation[b]``.
        target: ``(B, *spatial)`` labels of the raw images, in ``[0, C)`` or ``ignore_index``.
        permutation: ``(B,)`` partner index of every mixed image.
        margin: ``m >= 0``.
        ignore_index: label value of unlabelled pixels.
        reduction: ``'mean'`` over the valid pixels, ``'sum'``, or ``'none'`` (a ``(B, *spatial)`` map with zeros
            where a pixel takes no part).

    Raises:
        TypeError / ValueError: on bad dtypes, shapes, devices, labels, indices, margin or reduction.
    """
    check_reduction(reduction)
    margin = check_non_negative('margin', margin)
    valid = _check_raw(raw_logits, target, ignore_index)
    _check_mixed(mixed_logits, raw_logits, raw_logits.shape, '(B, C, *spatial)')
    batch = raw_logits.shape[0]
    permutation = _check_permutations(permutation, (batch,), batch, 'permutation')
    dtype = compute_dtype(raw_logits.dtype)
    top_raw = raw_logits.to(dtype).amax(dim=1)
    top_mixed = mixed_logits.to(dtype).amax(dim=1)
    valid = valid & mixup_pair_valid(target, permutation, ignore_index=ignore_index)
    return _reduce(torch.relu(top_mixed - top_raw + margin), valid, reduction)


SAME_LABEL_MODES = ('keep', 'mask')


def mndcg_loss(raw_logits: Tensor, mixed_logits: Tensor, target: Tensor, permutations: Tensor, lams: Lambdas,
               *, same_label: str = 'keep', ignore_index: int = 255, reduction: str = 'mean') -> Tensor:
    r"""Mixup normalised DCG loss (M-NDCG) per pixel over the raw image and ``T`` mixups of it.

    Per pixel, entries sorted by relevance (descending; ties keep the draw order) with confidences ``c``
    (max-softmax) in the same order; the raw entry has relevance 1, mixup ``t`` has ``max(lambda_t, 1 - lambda_t)``
    where its two sources carry different labels and 1 where they share the label (``same_label='keep'``, the
    authors' rule) or is removed there (``'mask'``); entries whose partner pixel is ignored are removed:

    .. math::
        \mathrm{DCG} = \sum_q \frac{c_q}{\log_2(q+1)},\quad \mathrm{IDCG} = \sum_q \frac{r_q}{\log_2(q+1)},\quad
        L = \frac{1}{|V|}\sum_{(b,p)\in V}\Big(1 - \frac{\min(\mathrm{DCG},\mathrm{IDCG})}
        {\max(\mathrm{DCG},\mathrm{IDCG})}\Big)

    ``V``: pixels with a labelled raw image and at least one kept mixup entry. Noh et al., ICCV 2023 (``T = 3``).

    Args:
        raw_logits: ``(B, C, *spatial)`` logits of the raw images.
        mixed_logits: ``(T, B, C, *spatial)``; ``mixed_logits[t, b]`` is raw ``b`` (weight ``lams[t]``) mixed with
            raw ``permutations[t, b]``.
        target: ``(B, *spatial)`` labels of the raw images.
        permutations: ``(T, B)`` partner indices.
        lams: ``T`` mixing coefficients in ``[0, 1]`` (sequence or tensor).
        same_label: ``'keep'`` (default, the authors' code: relevance 1 where both sources share the label) or
            ``'mask'`` (remove those entries).
        ignore_index: label value of unlabelled pixels.
        reduction: ``'mean'`` over ``V``, ``'sum'``, or ``'none'`` (``(B, *spatial)``, zeros outside ``V``).

    Raises:
        TypeError / ValueError: on bad dtypes, shapes, devices, labels, indices, coefficients, ``same_label`` or
            reduction.
    """
    check_reduction(reduction)
    if same_label not in SAME_LABEL_MODES:
        raise ValueError(f'same_label must be one of {SAME_LABEL_MODES}, got {same_label!r}')
    valid = _check_raw(raw_logits, target, ignore_index)
    if isinstance(mixed_logits, Tensor) and mixed_logits.dim() != raw_logits.dim() + 1:
        raise ValueError(f'mixed_logits must have shape (T, B, C, *spatial), one more dimension than raw_logits '
                         f'{tuple(raw_logits.shape)}, got {tuple(mixed_logits.shape)}')
    num_mixups = mixed_logits.shape[0] if isinstance(mixed_logits, Tensor) else 0
    if num_mixups < 1:
        raise ValueError('mndcg_loss needs at least one mixup (mixed_logits of shape (T, B, C, *spatial), T >= 1)')
    _check_mixed(mixed_logits, raw_logits, torch.Size((num_mixups,)) + raw_logits.shape, '(T, B, C, *spatial)')
    batch = raw_logits.shape[0]
    permutations = _check_permutations(permutations, (num_mixups, batch), batch, 'permutations')
    lam_values = _check_lams(lams, num_mixups)

    dtype = compute_dtype(raw_logits.dtype)
    conf_mixed = _max_confidence(mixed_logits.to(dtype), dim=2)  # (T, B, *spatial)
    lam_rel = torch.maximum(lam_values, 1.0 - lam_values).to(device=conf_mixed.device, dtype=dtype)
    partners = torch.stack([target[permutations[t].to(target.device)] for t in range(num_mixups)])
    labelled = (partners != ignore_index) & valid.unsqueeze(0)
    same = partners == target.unsqueeze(0)
    lam_rel = lam_rel.reshape((-1,) + (1,) * (conf_mixed.dim() - 1))
    relevance = torch.where(same, torch.ones_like(conf_mixed), lam_rel.expand_as(conf_mixed))
    pair_valid = labelled & ~same if same_label == 'mask' else labelled
    # per pixel: mixups by descending relevance, ties in draw order (stable), after the raw entry
    order = torch.sort(relevance.detach(), dim=0, descending=True, stable=True).indices
    conf = torch.cat([_max_confidence(raw_logits.to(dtype), dim=1).unsqueeze(0), conf_mixed.gather(0, order)])
    relevance = torch.cat([torch.ones_like(conf[:1]), relevance.gather(0, order)])
    pair_valid = pair_valid.gather(0, order)
    entry_valid = torch.cat([valid.unsqueeze(0), pair_valid])
    position = torch.cumsum(entry_valid.to(dtype), dim=0)  # 1-based position among the kept entries
    discount = torch.where(entry_valid, 1.0 / torch.log2(position + 1.0), position.new_zeros(()))
    pixel_valid = valid & pair_valid.any(dim=0)
    one = discount.new_ones(())
    # pixels that take no part get DCG = IDCG = 1 (not 0/0, whose gradient would be NaN even when masked)
    dcg = torch.where(pixel_valid, (conf * discount).sum(dim=0), one)
    idcg = torch.where(pixel_valid, (relevance * discount).sum(dim=0), one)
    pixel_loss = 1.0 - torch.minimum(dcg, idcg) / torch.maximum(dcg, idcg)
    return _reduce(pixel_loss, pixel_valid, reduction)

