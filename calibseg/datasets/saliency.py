"""Salient object detection datasets (binary foreground masks) in their conventional on-disk layouts.

Every dataset reads image/mask pairs matched by file stem (path relative to the image or mask folder,
without suffix) and checks the pairing when it is built: an image without a mask or a mask without an
image raises ``ValueError`` naming the files, before any pipeline runs.

Default layouts under ``data_root``:

* ``DUTSDataset``: ``DUTS-TR/DUTS-TR-Image/*.jpg`` + ``DUTS-TR/DUTS-TR-Mask/*.png`` (``data_root`` is the
  ``DUTS`` folder; DUTS-TE via ``data_prefix``, see the class);
* ``ECSSDDataset``: ``images/*.jpg`` + ``ground_truth_mask/*.png``;
* ``HKUISDataset``: ``imgs/*.png`` + ``gt/*.png`` (``.jpg`` images accepted too);
* ``PASCALSDataset``: ``*.jpg`` + ``*.png`` in one folder (two folders via ``data_prefix``);
* ``DUTOMRONDataset``: ``DUT-OMRON-image/*.jpg`` + ``pixelwiseGT-new-PNG/*.png``;
* ``SODDataset`` and the generic ``SaliencyDataset``: ``Image/*.jpg`` + ``Mask/*.png`` (``.png`` images
  accepted too).

Every dataset also reads the common normalised repack ``<DS>/Image/*.jpg`` + ``<DS>/Mask/*.png``
(written by ``tools/dataset_converters/check_saliency_dataset.py --repack``) with
``data_root='<out>/<DS>', data_prefix=dict(img_path='Image', seg_map_path='Mask')``.

Masks are 8-bit 0/255 images: **pipelines must load them with** ``LoadBinaryAnnotations`` (not
``LoadAnnotations``), which binarises at ``> 128`` into ``{0, 1}`` so that foreground (255) never
collides with ``ignore_index=255``. Classes: ``('background', 'foreground')``.
"""
from __future__ import annotations

import os.path as osp
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import mmengine
from mmengine import fileio
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

__all__ = [
    'SaliencyLayout', 'SaliencyPairs', 'pair_saliency_files', 'describe_unpaired', 'SALIENCY_LAYOUTS',
    'SaliencyDataset', 'DUTSDataset', 'ECSSDDataset', 'HKUISDataset', 'PASCALSDataset', 'DUTOMRONDataset', 'SODDataset'
]

Suffixes = Union[str, Sequence[str]]


class SaliencyLayout(NamedTuple):
    """Where one dataset keeps its files, relative to its root.

    Attributes:
        img_dir: image folder (``''`` for the root itself).
        mask_dir: mask folder (may equal ``img_dir``).
        img_suffix: accepted image suffixes (tried in this order when a stem has several).
        mask_suffix: mask suffix.
        name: folder name of the dataset in a ``<DS>/Image`` + ``<DS>/Mask`` repack.
    """

    img_dir: str
    mask_dir: str
    img_suffix: Tuple[str, ...]
    mask_suffix: str
    name: str


class SaliencyPairs(NamedTuple):
    """Result of :func:`pair_saliency_files` (relative paths, sorted by stem).

    Attributes:
        pairs: ``(stem, image file, mask file)`` for every stem that has both.
        images_without_mask: image files whose stem has no mask.
        masks_without_image: mask files whose stem has no image.
        ambiguous: image files whose stem occurs with several image suffixes.
    """

    pairs: List[Tuple[str, str, str]]
    images_without_mask: List[str]
    masks_without_image: List[str]
    ambiguous: List[str]

    @property
    def complete(self) -> bool:
        """True when every file is paired and no stem is ambiguous."""
        return not (self.images_without_mask or self.masks_without_image or self.ambiguous)


def _as_suffixes(name: str, value: Suffixes) -> Tuple[str, ...]:
    suffixes = (value,) if isinstance(value, str) else tuple(value)
    if not suffixes or not all(isinstance(s, str) and s.startswith('.') and len(s) > 1 for s in suffixes):
        raise ValueError(f"{name} must be a suffix like '.jpg' or a sequence of them, got {value!r}")
    return suffixes


def pair_saliency_files(image_files: Iterable[str], mask_files: Iterable[str], *, img_suffix: Suffixes,
                        seg_map_suffix: str) -> SaliencyPairs:
    """Match images and masks by stem (relative path without suffix).

    Files with other suffixes are skipped, so one folder may hold both images and masks as long as
    the suffixes differ.

    Args:
        image_files: file names (relative paths) found in the image folder.
        mask_files: file names (relative paths) found in the mask folder.
        img_suffix: image suffix or suffixes (e.g. ``('.png', '.jpg')``).
        seg_map_suffix: mask suffix.

    Returns:
        :class:`SaliencyPairs`.
    """
    img_suffixes = _as_suffixes('img_suffix', img_suffix)
    (mask_suffix,) = _as_suffixes('seg_map_suffix', seg_map_suffix)
    by_stem: Dict[str, List[str]] = {}
    for name in sorted(image_files):
        suffix = next((s for s in img_suffixes if name.endswith(s)), None)
        if suffix is not None:
            by_stem.setdefault(name[:-len(suffix)], []).append(name)
    images = {stem: names[0] for stem, names in by_stem.items() if len(names) == 1}
    ambiguous = [name for names in by_stem.values() if len(names) > 1 for name in names]
    masks = {name[:-len(mask_suffix)]: name for name in sorted(mask_files) if name.endswith(mask_suffix)}
    pairs = [(stem, images[stem], masks[stem]) for stem in sorted(images) if stem in masks]
    return SaliencyPairs(
        pairs=pairs,
        images_without_mask=[images[s] for s in sorted(images) if s not in masks],
        masks_without_image=[masks[s] for s in sorted(masks) if s not in images],
        ambiguous=sorted(set(ambiguous)))


def _shown(names: Sequence[str], limit: int = 20) -> str:
    more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def describe_unpaired(pairs: SaliencyPairs, img_dir: str, mask_dir: str) -> List[str]:
    """One human-readable line per kind of pairing problem (empty when complete)."""
    lines = []
    if pairs.images_without_mask:
        lines.append(f'{len(pairs.images_without_mask)} image(s) in {img_dir} without a mask in {mask_dir}: '
                     f'{_shown(pairs.images_without_mask)}')
    if pairs.masks_without_image:
        lines.append(f'{len(pairs.masks_without_image)} mask(s) in {mask_dir} without an image in {img_dir}: '
                     f'{_shown(pairs.masks_without_image)}')
    if pairs.ambiguous:
        lines.append(f'image stems with several image suffixes in {img_dir}: {_shown(pairs.ambiguous)}')
    return lines


SALIENCY_METAINFO = dict(classes=('background', 'foreground'), palette=[[0, 0, 0], [255, 255, 255]])


@DATASETS.register_module()
class SaliencyDataset(BaseSegDataset):
    """Base class of the binary saliency datasets: stem-matched image/mask pairs, checked at build time.

    Registered itself for any ``<DS>/Image/*.jpg|png`` + ``<DS>/Mask/*.png`` repack (its default layout);
    a subclass only sets :attr:`LAYOUT` (its conventional folders and suffixes). Labels are loaded by
    ``LoadBinaryAnnotations`` (0/255 masks -> {0, 1}); ``reduce_zero_label`` is always ``False``.

    Args:
        data_root: dataset root folder.
        data_prefix: ``dict(img_path=..., seg_map_path=...)`` relative to ``data_root`` (both keys
            required); default: the class's conventional layout. For the ``<DS>/Image`` +
            ``<DS>/Mask`` repack pass ``dict(img_path='Image', seg_map_path='Mask')``.
        img_suffix: image suffix or sequence of suffixes; default: the layout's.
        seg_map_suffix: mask suffix; default: the layout's (``'.png'``).
        ann_file: optional text file of stems (one per line, relative to the image folder, without
            suffix) selecting a subset, e.g. a train/validation split of DUTS-TR.
        metainfo, pipeline, test_mode, lazy_init, serialize_data, filter_cfg, indices, max_refetch,
        ignore_index, backend_args: as in mmseg's ``BaseSegDataset``.

    Raises:
        ValueError: at construction, on a bad ``data_prefix`` or suffix, a missing folder, no pairs,
            images without masks or masks without images (naming the files), or ``ann_file`` stems
            without a pair.
    """

    METAINFO = SALIENCY_METAINFO
    LAYOUT: SaliencyLayout = SaliencyLayout('Image', 'Mask', ('.jpg', '.png'), '.png', '')

    def __init__(self, *, data_root: Optional[str] = None, data_prefix: Optional[Dict[str, str]] = None,
                 img_suffix: Optional[Suffixes] = None, seg_map_suffix: Optional[str] = None, ann_file: str = '',
                 metainfo: Optional[dict] = None, pipeline: Sequence[Union[dict, Callable]] = (),
                 test_mode: bool = False, lazy_init: bool = False, serialize_data: bool = True,
                 filter_cfg: Optional[dict] = None, indices: Optional[Union[int, Sequence[int]]] = None,
                 max_refetch: int = 1000, ignore_index: int = 255, backend_args: Optional[dict] = None) -> None:
        layout = self.LAYOUT
        if data_prefix is None:
            data_prefix = dict(img_path=layout.img_dir, seg_map_path=layout.mask_dir)
        if not isinstance(data_prefix, dict) or set(data_prefix) != {'img_path', 'seg_map_path'} \
                or not all(isinstance(v, str) for v in data_prefix.values()):
            raise ValueError(f"data_prefix must be dict(img_path=<str>, seg_map_path=<str>), got {data_prefix!r}")
        self._img_suffixes = _as_suffixes('img_suffix', layout.img_suffix if img_suffix is None else img_suffix)
        (mask_suffix,) = _as_suffixes('seg_map_suffix', layout.mask_suffix if seg_map_suffix is None
                                      else seg_map_suffix)
        same_folder = osp.normpath(data_prefix['img_path']) == osp.normpath(data_prefix['seg_map_path'])
        if same_folder and mask_suffix in self._img_suffixes:
            raise ValueError(f'images and masks share the folder {data_prefix["img_path"]!r}, so seg_map_suffix '
                             f'{mask_suffix!r} must differ from the image suffixes {self._img_suffixes}')
        super().__init__(ann_file=ann_file, img_suffix=self._img_suffixes, seg_map_suffix=mask_suffix,
                         metainfo=metainfo, data_root=data_root, data_prefix=data_prefix, filter_cfg=filter_cfg,
                         indices=indices, serialize_data=serialize_data, pipeline=list(pipeline),
                         test_mode=test_mode, lazy_init=lazy_init, max_refetch=max_refetch,
                         ignore_index=ignore_index, reduce_zero_label=False, backend_args=backend_args)

    def _list_files(self, folder: str, suffixes: Tuple[str, ...], what: str) -> List[str]:
        if not fileio.isdir(folder, backend_args=self.backend_args):
            raise ValueError(f'{type(self).__name__}: {what} folder {folder!r} does not exist (data_root='
                             f'{self.data_root!r}); expected layout {self.LAYOUT.img_dir or "."}/*'
                             f'{"|".join(self.LAYOUT.img_suffix)} + {self.LAYOUT.mask_dir or "."}/*'
                             f'{self.LAYOUT.mask_suffix}, or pass data_prefix')
        return list(fileio.list_dir_or_file(folder, list_dir=False, suffix=suffixes, recursive=True,
                                            backend_args=self.backend_args))

    def load_data_list(self) -> List[dict]:
        """Pair images and masks by stem; raise ``ValueError`` naming any unpaired file."""
        img_dir = self.data_prefix['img_path']
        mask_dir = self.data_prefix['seg_map_path']
        name = type(self).__name__
        pairs = pair_saliency_files(self._list_files(img_dir, self._img_suffixes, 'image'),
                                    self._list_files(mask_dir, (self.seg_map_suffix,), 'mask'),
                                    img_suffix=self._img_suffixes, seg_map_suffix=self.seg_map_suffix)
        selected = pairs.pairs
        if self.ann_file:
            stems = [line.strip() for line in mmengine.list_from_file(self.ann_file, backend_args=self.backend_args)]
            stems = [s for s in stems if s]
            by_stem = {stem: (stem, img, mask) for stem, img, mask in pairs.pairs}
            missing = [s for s in stems if s not in by_stem]
            if missing:
                raise ValueError(f'{name}: {len(missing)} stem(s) of ann_file {self.ann_file} have no image/mask '
                                 f'pair in {img_dir} / {mask_dir}: {_shown(missing)}')
            selected = [by_stem[s] for s in stems]
        else:
            problems = describe_unpaired(pairs, img_dir, mask_dir)
            if problems:
                raise ValueError(f'{name}: unpaired files (run tools/dataset_converters/check_saliency_dataset.py '
                                 f'for a full report):\n  ' + '\n  '.join(problems))
        if not selected:
            raise ValueError(f'{name}: no image/mask pairs in {img_dir} (images *{"|*".join(self._img_suffixes)}) '
                             f'and {mask_dir} (masks *{self.seg_map_suffix})')
        data_list = [
            dict(img_path=osp.join(img_dir, img), seg_map_path=osp.join(mask_dir, mask), label_map=self.label_map,
                 reduce_zero_label=False, seg_fields=[]) for _, img, mask in selected
        ]
        if not self.ann_file:
            data_list.sort(key=lambda info: info['img_path'])
        return data_list


@DATASETS.register_module()
class DUTSDataset(SaliencyDataset):
    """DUTS (Wang et al., CVPR 2017): 10,553 training (DUTS-TR) and 5,019 test (DUTS-TE) images.

    ``data_root`` is the folder holding ``DUTS-TR/`` and ``DUTS-TE/``. Default: DUTS-TR; for DUTS-TE
    pass ``data_prefix=dict(img_path='DUTS-TE/DUTS-TE-Image', seg_map_path='DUTS-TE/DUTS-TE-Mask')``.
    The ASLP setup splits DUTS-TR into 9,553 train / 1,000 validation images: use ``ann_file``.
    """

    LAYOUT = SaliencyLayout('DUTS-TR/DUTS-TR-Image', 'DUTS-TR/DUTS-TR-Mask', ('.jpg',), '.png', 'DUTS-TR')


@DATASETS.register_module()
class ECSSDDataset(SaliencyDataset):
    """ECSSD (Yan et al., CVPR 2013): 1,000 images, ``images/*.jpg`` + ``ground_truth_mask/*.png``."""

    LAYOUT = SaliencyLayout('images', 'ground_truth_mask', ('.jpg',), '.png', 'ECSSD')


@DATASETS.register_module()
class HKUISDataset(SaliencyDataset):
    """HKU-IS (Li & Yu, CVPR 2015): 4,447 images, ``imgs/*.png`` + ``gt/*.png`` (repacks use ``.jpg``
    images: both suffixes are accepted)."""

    LAYOUT = SaliencyLayout('imgs', 'gt', ('.png', '.jpg'), '.png', 'HKU-IS')


@DATASETS.register_module()
class PASCALSDataset(SaliencyDataset):
    """PASCAL-S (Li et al., CVPR 2014): 850 images, ``*.jpg`` + ``*.png`` in one folder (default:
    ``data_root`` itself); for two folders, e.g. the original release,
    ``data_prefix=dict(img_path='imgs/pascal', seg_map_path='masks/pascal')``."""

    LAYOUT = SaliencyLayout('', '', ('.jpg',), '.png', 'PASCAL-S')


@DATASETS.register_module()
class DUTOMRONDataset(SaliencyDataset):
    """DUT-OMRON (Yang et al., CVPR 2013): 5,168 images, ``DUT-OMRON-image/*.jpg`` +
    ``pixelwiseGT-new-PNG/*.png``."""

    LAYOUT = SaliencyLayout('DUT-OMRON-image', 'pixelwiseGT-new-PNG', ('.jpg',), '.png', 'DUT-OMRON')


@DATASETS.register_module()
class SODDataset(SaliencyDataset):
    """SOD (Movahedi & Elder, CVPRW 2010): 300 images, distributed as the ``Image/*.jpg`` + ``Mask/*.png``
    repack (``.png`` images accepted)."""

    LAYOUT = SaliencyLayout('Image', 'Mask', ('.jpg', '.png'), '.png', 'SOD')


REPACK_LAYOUT = SaliencyDataset.LAYOUT
"""The normalised ``<DS>/Image`` + ``<DS>/Mask`` repack (images keep their format: ``.jpg`` or ``.png``)."""

SALIENCY_LAYOUTS: Dict[str, SaliencyLayout] = {
    'duts-tr': DUTSDataset.LAYOUT,
    'duts-te': SaliencyLayout('DUTS-TE/DUTS-TE-Image', 'DUTS-TE/DUTS-TE-Mask', ('.jpg',), '.png', 'DUTS-TE'),
    'ecssd': ECSSDDataset.LAYOUT,
    'hku-is': HKUISDataset.LAYOUT,
    'pascal-s': PASCALSDataset.LAYOUT,
    'dut-omron': DUTOMRONDataset.LAYOUT,
    'sod': SODDataset.LAYOUT,
    'repack': REPACK_LAYOUT,
}
"""Layout names of ``check_saliency_dataset.py --layout``, the same folders the datasets read by default."""
