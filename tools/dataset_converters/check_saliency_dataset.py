#!/usr/bin/env python
"""Check a downloaded saliency dataset, and optionally write the ``<DS>/Image`` + ``<DS>/Mask`` repack.

    python tools/dataset_converters/check_saliency_dataset.py DATASET_ROOT \\
        --layout {duts-tr,duts-te,ecssd,hku-is,pascal-s,dut-omron,sod,repack} [--repack OUT] [--name DS]

``DATASET_ROOT`` is what the matching calibseg dataset takes as ``data_root`` (for DUTS: the folder that
holds ``DUTS-TR/`` and ``DUTS-TE/``); the layouts are the datasets' defaults
(:data:`calibseg.datasets.saliency.SALIENCY_LAYOUTS`). Reported, with file names:

* images without a mask and masks without an image (and stems with several image suffixes);
* image/mask size mismatches;
* soft masks: more than ``--soft-tolerance`` (5%) of the pixels neither 0 nor 255;
* 0/1 masks (maximum value 1): binarised at ``> 128`` they would be empty;
* files that cannot be decoded.

Masks are read as 8-bit grayscale, as ``LoadBinaryAnnotations`` reads them. The exit status is 1 when a
problem was found, else 0.

``--repack OUT`` writes ``OUT/<DS>/Image/<stem>.<ext>`` (image bytes copied unchanged, so ``.png`` images
stay ``.png``) and ``OUT/<DS>/Mask/<stem>.png`` (8-bit grayscale, values unchanged) for every pair that
decodes and whose sizes match; pairs with soft masks are kept (they are loadable), broken pairs are
skipped. ``<DS>`` is ``--name`` or the layout's dataset name (``DUTS-TR``, ``ECSSD``, ...).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import shutil
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from calibseg.datasets.saliency import (
    SALIENCY_LAYOUTS,
    SaliencyLayout,
    SaliencyPairs,
    describe_unpaired,
    pair_saliency_files,
)

SOFT_TOLERANCE = 0.05


@dataclass
class SaliencyCheckReport:
    """What :func:`check_saliency_dataset` found; file names are relative to their folders.

    Attributes:
        root: the dataset root that was checked.
        layout: the layout name.
        img_dir, mask_dir: the absolute image and mask folders.
        pairs: ``(stem, image file, mask file)`` of every matched pair.
        images_without_mask, masks_without_image, ambiguous: pairing problems.
        size_mismatches: ``(image file, (w, h) of the image, (w, h) of the mask)``.
        soft_masks: ``(mask file, fraction of pixels neither 0 nor 255)`` above the tolerance.
        zero_one_masks: mask files whose values are only 0 and 1.
        unreadable: ``(file, error message)``.
    """

    root: str
    layout: str
    img_dir: str
    mask_dir: str
    pairs: List[Tuple[str, str, str]] = field(default_factory=list)
    images_without_mask: List[str] = field(default_factory=list)
    masks_without_image: List[str] = field(default_factory=list)
    ambiguous: List[str] = field(default_factory=list)
    size_mismatches: List[Tuple[str, Tuple[int, int], Tuple[int, int]]] = field(default_factory=list)
    soft_masks: List[Tuple[str, float]] = field(default_factory=list)
    zero_one_masks: List[str] = field(default_factory=list)
    unreadable: List[Tuple[str, str]] = field(default_factory=list)
    soft_tolerance: float = SOFT_TOLERANCE
    missing_dirs: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems()

    def broken(self) -> set:
        """Stems whose pair cannot be used (undecodable file or size mismatch)."""
        bad_files = {name for name, _ in self.unreadable} | {img for img, _, _ in self.size_mismatches}
        return {stem for stem, img, mask in self.pairs if img in bad_files or mask in bad_files}

    def problems(self) -> List[str]:
        """One line per problem, naming the files."""
        lines = [f'missing folder: {d}' for d in self.missing_dirs]
        lines += describe_unpaired(SaliencyPairs(self.pairs, self.images_without_mask, self.masks_without_image,
                                                 self.ambiguous), self.img_dir, self.mask_dir)
        lines += [f'size mismatch: image {img} is {iw}x{ih} but its mask is {mw}x{mh}'
                  for img, (iw, ih), (mw, mh) in self.size_mismatches]
        lines += [f'soft mask: {mask} has {frac:.1%} of its pixels neither 0 nor 255 '
                  f'(tolerance {self.soft_tolerance:.0%})' for mask, frac in self.soft_masks]
        lines += [f'0/1 mask: {mask} only holds 0 and 1 (binarised at > 128 it would be empty)'
                  for mask in self.zero_one_masks]
        lines += [f'unreadable: {name}: {err}' for name, err in self.unreadable]
        if not self.missing_dirs and not self.pairs:
            lines.append(f'no image/mask pairs found in {self.img_dir} and {self.mask_dir}')
        return lines

    def summary(self) -> str:
        """A printable report."""
        head = (f'{self.layout} at {self.root}: {len(self.pairs)} image/mask pairs '
                f'(images {self.img_dir}, masks {self.mask_dir})')
        problems = self.problems()
        if not problems:
            return head + '\nOK: no problem found'
        return head + f'\n{len(problems)} problem(s):\n  ' + '\n  '.join(problems)


def _list_files(folder: str, suffixes: Tuple[str, ...]) -> List[str]:
    found = []
    for dirpath, _, files in os.walk(folder):
        rel_dir = osp.relpath(dirpath, folder)
        for name in files:
            if name.endswith(suffixes):
                found.append(name if rel_dir == '.' else osp.join(rel_dir, name))
    return sorted(found)


def _layout(layout: str) -> SaliencyLayout:
    if layout not in SALIENCY_LAYOUTS:
        raise ValueError(f'layout must be one of {sorted(SALIENCY_LAYOUTS)}, got {layout!r}')
    return SALIENCY_LAYOUTS[layout]


def read_mask(path: str) -> np.ndarray:
    """A mask as 8-bit grayscale ``(H, W)`` (Pillow ``convert('L')``, as ``LoadBinaryAnnotations``)."""
    with Image.open(path) as im:
        return np.asarray(im.convert('L'))


def check_saliency_dataset(root: str, layout: str, *, soft_tolerance: float = SOFT_TOLERANCE) -> SaliencyCheckReport:
    """Validate a saliency dataset in one of :data:`~calibseg.datasets.saliency.SALIENCY_LAYOUTS`.

    Args:
        root: dataset root (the ``data_root`` of the matching calibseg dataset).
        layout: layout name (``'duts-tr'``, ``'ecssd'``, ..., ``'repack'``).
        soft_tolerance: largest accepted fraction of mask pixels that are neither 0 nor 255.

    Returns:
        :class:`SaliencyCheckReport` (``report.ok``, ``report.problems()``).

    Raises:
        ValueError: on an unknown ``layout`` or a ``soft_tolerance`` outside ``[0, 1]``.
    """
    spec = _layout(layout)
    if not 0.0 <= soft_tolerance <= 1.0:
        raise ValueError(f'soft_tolerance must lie in [0, 1], got {soft_tolerance!r}')
    img_dir = osp.abspath(osp.join(root, spec.img_dir))
    mask_dir = osp.abspath(osp.join(root, spec.mask_dir))
    report = SaliencyCheckReport(root=root, layout=layout, img_dir=img_dir, mask_dir=mask_dir,
                                 soft_tolerance=soft_tolerance)
    report.missing_dirs = [d for d in dict.fromkeys((img_dir, mask_dir)) if not osp.isdir(d)]
    if report.missing_dirs:
        return report
    pairs = pair_saliency_files(_list_files(img_dir, spec.img_suffix), _list_files(mask_dir, (spec.mask_suffix,)),
                                img_suffix=spec.img_suffix, seg_map_suffix=spec.mask_suffix)
    report.pairs = pairs.pairs
    report.images_without_mask = pairs.images_without_mask
    report.masks_without_image = pairs.masks_without_image
    report.ambiguous = pairs.ambiguous
    for _, img, mask in pairs.pairs:
        try:
            with Image.open(osp.join(img_dir, img)) as im:
                img_size = im.size
        except Exception as err:  # any decoding error is reported, not raised
            report.unreadable.append((img, f'{type(err).__name__}: {err}'))
            img_size = None
        try:
            values = read_mask(osp.join(mask_dir, mask))
        except Exception as err:
            report.unreadable.append((mask, f'{type(err).__name__}: {err}'))
            continue
        mask_size = (values.shape[1], values.shape[0])
        if img_size is not None and img_size != mask_size:
            report.size_mismatches.append((img, img_size, mask_size))
        if values.max() == 1:  # a 0/1 mask, not a soft one
            report.zero_one_masks.append(mask)
            continue
        soft = float(np.count_nonzero((values != 0) & (values != 255))) / values.size
        if soft > soft_tolerance:
            report.soft_masks.append((mask, soft))
    return report


def repack_saliency_dataset(report: SaliencyCheckReport, out: str, *, name: Optional[str] = None) -> str:
    """Write the ``<out>/<name>/Image`` + ``<out>/<name>/Mask`` repack of the usable pairs of ``report``.

    Images are copied byte for byte (their suffix is kept); masks are written as 8-bit grayscale PNG with
    unchanged values. Nested stems become flat names (``a/b`` -> ``a_b``).

    Returns:
        The dataset folder ``<out>/<name>`` (``data_root`` for the datasets, with
        ``data_prefix=dict(img_path='Image', seg_map_path='Mask')``).

    Raises:
        ValueError: if no name is known (layout ``repack`` without ``name``) or two stems collide.
    """
    name = name or _layout(report.layout).name or osp.basename(osp.normpath(report.root))
    if not name:
        raise ValueError('name is required to repack this layout')
    target = osp.join(out, name)
    img_out, mask_out = osp.join(target, 'Image'), osp.join(target, 'Mask')
    os.makedirs(img_out, exist_ok=True)
    os.makedirs(mask_out, exist_ok=True)
    broken = report.broken()
    written = set()
    for stem, img, mask in report.pairs:
        if stem in broken:
            continue
        flat = stem.replace('/', '_').replace(os.sep, '_')
        if flat in written:
            raise ValueError(f'stems collide in the flat repack: {stem!r} -> {flat!r}')
        written.add(flat)
        ext = osp.splitext(img)[1]
        shutil.copyfile(osp.join(report.img_dir, img), osp.join(img_out, flat + ext))
        Image.fromarray(read_mask(osp.join(report.mask_dir, mask)), mode='L').save(osp.join(mask_out, flat + '.png'))
    return target


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', metavar='DATASET_ROOT', help='dataset root (the dataset\'s data_root)')
    parser.add_argument('--layout', required=True, choices=sorted(SALIENCY_LAYOUTS), help='on-disk layout')
    parser.add_argument('--repack', metavar='OUT', default=None, help='write OUT/<DS>/Image + OUT/<DS>/Mask')
    parser.add_argument('--name', default=None, help='<DS> folder name of the repack (default: the layout\'s)')
    parser.add_argument('--soft-tolerance', type=float, default=SOFT_TOLERANCE,
                        help='largest accepted fraction of mask pixels neither 0 nor 255 (default 0.05)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    report = check_saliency_dataset(args.root, args.layout, soft_tolerance=args.soft_tolerance)
    print(report.summary(), flush=True)
    if args.repack and report.pairs:
        target = repack_saliency_dataset(report, args.repack, name=args.name)
        print(f'repacked {len(report.pairs) - len(report.broken())} pair(s) to {target}', flush=True)
    return 0 if report.ok else 1


if __name__ == '__main__':
    sys.exit(main())
