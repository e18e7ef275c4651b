"""Datasets: readers for the annotation formats users have, all producing :class:`Instance` records."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .celebamask import PARTS as CELEBAMASK_PARTS
from .celebamask import read_celebamask
from .coco import read_coco
from .dataset import InstanceDataset
from .images import load_image, read_mask_file
from .instance import BoxShape, Instance, MaskFileShape, PolygonShape, RLEShape
from .masks import read_mask_folder
from .voc import read_voc

FORMATS = ("coco", "voc", "masks", "celebamask")


def read_dataset(
    fmt: str,
    data: str | os.PathLike[str],
    *,
    images: str | os.PathLike[str] | None = None,
    categories: Sequence[str] | None = None,
    strict: bool = False,
) -> InstanceDataset:
    """Read a dataset in one of :data:`FORMATS`.

    Args:
        fmt: ``coco`` (``data`` = instances JSON), ``voc`` (``data`` = folder of XML files),
            ``masks`` (``data`` = mask folder, ``images`` required), ``celebamask`` (``data`` = root).
        data: see ``fmt``.
        images: images folder (optional except for ``masks``).
        categories: category / part names to keep.
        strict: fail on the first bad annotation instead of skipping and counting.
    """
    if fmt == "coco":
        return read_coco(data, images, categories=categories, strict=strict)
    if fmt == "voc":
        return read_voc(data, images, categories=categories, strict=strict)
    if fmt == "masks":
        if images is None:
            raise ValueError("the 'masks' format needs the images folder (--images)")
        return read_mask_folder(images, data, categories=categories, strict=strict)
    if fmt == "celebamask":
        return read_celebamask(data, categories=categories, images_dir=images, strict=strict)
    raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


__all__ = [
    "CELEBAMASK_PARTS",
    "FORMATS",
    "BoxShape",
    "Instance",
    "InstanceDataset",
    "MaskFileShape",
    "PolygonShape",
    "RLEShape",
    "load_image",
    "read_celebamask",
    "read_coco",
    "read_dataset",
    "read_mask_file",
    "read_mask_folder",
    "read_voc",
]
