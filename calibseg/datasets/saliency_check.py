"""Check a saliency dataset on disk, and write the ``<DS>/Image`` + ``<DS>/Mask`` repack of its usable pairs.

:func:`check_saliency_dataset` reports, with file names (relative to their folders):

* images without a mask and masks without an image (and stems with several image suffixes);
* image/mask size mismatches;
* soft masks: more than ``soft_tolerance`` (5%) of the pixels neither 0 nor 255;
* masks that binarising at ``> 128`` would turn all background although they are not empty (0/1 or 0/100
  label maps: maximum value in ``(0, 128]``);
* files that cannot be decoded: every image and mask is *decoded fully* (a truncated file whose header is
  intact is reported as such, not only files whose header is broken).

Masks are read as 8-bit grayscale, as :class:`~calibseg.datasets.transforms.LoadBinaryAnnotations` reads
them. :func:`repack_saliency_dataset` writes the pairs that decode and whose sizes match (soft masks are kept,
they are loadable); every file goes through a temporary name and is renamed into place, and an existing
non-empty output folder is refused unless ``force=True``.
"""
from __future__ import annotations

import os
import os.path as osp
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

import numpy as np
from PIL import Image

from .saliency import SALIENCY_LAYOUTS, SaliencyLayout, SaliencyPairs, describe_unpaired, pair_saliency_files

__all__ = ['SOFT_TOLERANCE', 'BINARY_THRESHOLD', 'SaliencyCheckReport', 'check_saliency_dataset',
           'repack_saliency_dataset', 'read_mask', 'decode_image']

SOFT_TOLERANCE = 0.05
#: the saliency protocol's binarisation: foreground where the 8-bit mask value is ``> 128``
BINARY_THRESHOLD = 128


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
        empty_after_binarising: ``(mask file, maximum value)`` of non-empty masks with no value above 128.
        unreadable: ``(file, error message)`` (truncated or corrupt files).
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
    empty_after_binarising: List[Tuple[str, int]] = field(default_factory=list)
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
        lines += [f'not a 0/255 mask: {mask} holds values up to {top} but none above {BINARY_THRESHOLD}, so '
                  f'binarised at > {BINARY_THRESHOLD} it would be empty (a 0/1 or 0/{top} label map?)'
                  for mask, top in self.empty_after_binarising]
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


def decode_image(path: str) -> Tuple[int, int]:
    """Decode an image *fully* (every pixel, not only the header) and return its ``(w, h)``.

    Raises:
        OSError: a truncated or corrupt file (Pillow's message, e.g. ``image file is truncated``).
    """
    with Image.open(path) as im:
        im.load()
        return im.size


def read_mask(path: str) -> np.ndarray:
    """A mask decoded fully as 8-bit grayscale ``(H, W)`` (Pillow ``convert('L')``, as ``LoadBinaryAnnotations``)."""
    with Image.open(path) as im:
        im.load()
        return np.asarray(im.convert('L'))


def _error(err: Exception) -> str:
    return f'{type(err).__name__}: {err}'


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
            img_size: Optional[Tuple[int, int]] = decode_image(osp.join(img_dir, img))
        except Exception as err:  # any decoding error is reported, not raised
            report.unreadable.append((img, _error(err)))
            img_size = None
        try:
            values = read_mask(osp.join(mask_dir, mask))
        except Exception as err:
            report.unreadable.append((mask, _error(err)))
            continue
        mask_size = (values.shape[1], values.shape[0])
        if img_size is not None and img_size != mask_size:
            report.size_mismatches.append((img, img_size, mask_size))
        top = int(values.max()) if values.size else 0
        if 0 < top <= BINARY_THRESHOLD:  # a label map (0/1, 0/100), not a soft 0/255 mask
            report.empty_after_binarising.append((mask, top))
            continue
        soft = float(np.count_nonzero((values != 0) & (values != 255))) / max(values.size, 1)
        if soft > soft_tolerance:
            report.soft_masks.append((mask, soft))
    return report


def _write_atomic(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` into a temporary file next to ``path``, then rename it into place."""
    folder = osp.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def repack_saliency_dataset(report: SaliencyCheckReport, out: str, *, name: Optional[str] = None,
                            force: bool = False) -> str:
    """Write the ``<out>/<name>/Image`` + ``<out>/<name>/Mask`` repack of the usable pairs of ``report``.

    Images are copied byte for byte (their suffix is kept); masks are written as 8-bit grayscale PNG with
    unchanged values. Nested stems become flat names (``a/b`` -> ``a_b``). Each file is written to a temporary
    name and renamed, so an interrupted repack leaves no half-written file under a final name.

    Returns:
        The dataset folder ``<out>/<name>`` (``data_root`` for the datasets, with
        ``data_prefix=dict(img_path='Image', seg_map_path='Mask')``).

    Raises:
        ValueError: if no name is known (layout ``repack`` without ``name``), two stems collide, the target
            folder is the checked dataset itself, or it exists and is not empty (without ``force``).
    """
    name = name or _layout(report.layout).name or osp.basename(osp.normpath(report.root))
    if not name:
        raise ValueError('name is required to repack this layout')
    target = osp.join(out, name)
    if osp.realpath(target) == osp.realpath(report.root):
        raise ValueError(f'refusing to repack {report.root} onto itself')
    if osp.isdir(target) and os.listdir(target) and not force:
        raise ValueError(f'{target} exists and is not empty; choose another output or pass force=True (--force)')
    img_out, mask_out = osp.join(target, 'Image'), osp.join(target, 'Mask')
    os.makedirs(img_out, exist_ok=True)
    os.makedirs(mask_out, exist_ok=True)
    broken = report.broken()
    usable = [(stem.replace('/', '_').replace(os.sep, '_'), stem, img, mask)
              for stem, img, mask in report.pairs if stem not in broken]
    seen = {}
    for flat, stem, _, _ in usable:  # all names checked before anything is written
        if flat in seen:
            raise ValueError(f'stems collide in the flat repack: {stem!r} and {seen[flat]!r} -> {flat!r}')
        seen[flat] = stem
    for flat, _, img, mask in usable:
        src = osp.join(report.img_dir, img)
        _write_atomic(osp.join(img_out, flat + osp.splitext(img)[1]), lambda tmp, src=src: shutil.copyfile(src, tmp))
        values = read_mask(osp.join(report.mask_dir, mask))
        _write_atomic(osp.join(mask_out, flat + '.png'),
                      lambda tmp, arr=values: Image.fromarray(arr, mode='L').save(tmp, format='PNG'))
    return target
