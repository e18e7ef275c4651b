"""An image folder plus a folder of mask PNGs.

For an image ``<images>/<sub>/<stem>.<ext>`` the masks are looked up in ``<masks>/<sub>/``:

- ``<stem>.png``: a label map; each distinct non-zero value is one instance (a binary 0/1 or 0/255
  mask is one instance) - the PerSeg layout ``Images/<obj>/NN.jpg`` + ``Annotations/<obj>/NN.png``;
- ``<stem>_<k>.png`` or ``<stem>/<k>.png``: one instance per file (its non-zero pixels).

The category of an instance is the first sub-folder of its image (``<obj>`` above), or ``"object"`` for
images directly in ``<images>``.

Every image either gives instances or is counted as skipped: no mask file, a mask file that several
images match (``a.jpg`` and ``a.png``), an unreadable mask or image, a mask of another size than the
image, an empty (all-zero) mask, or one smaller than ``min_area``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import InstanceDataset, Skip, SkipLog
from .images import check_image_file, find_images, read_mask_labels
from .instance import Instance, MaskFileShape

DEFAULT_CATEGORY = "object"


def read_mask_folder(
    images_dir: str | os.PathLike[str],
    masks_dir: str | os.PathLike[str],
    *,
    categories: Sequence[str] | None = None,
    min_area: float = 4.0,
    strict: bool = False,
) -> InstanceDataset:
    """Read an image folder and its mask folder (layout in the module docstring)."""
    images_root, masks_root = Path(images_dir), Path(masks_dir)
    for folder, what in ((images_root, "images"), (masks_root, "masks")):
        if not folder.is_dir():
            raise DataError(folder, f"{what} folder does not exist")
    images = find_images(images_root)
    if not images:
        raise DataError(images_root, "no images found")
    seen = {_category(path, images_root) for path in images}
    if categories:
        unknown = sorted(set(categories) - seen)
        if unknown:
            raise DataError(images_root, f"unknown categories {unknown}; available: {sorted(seen)}")
    label_maps = {_label_map(path, images_root, masks_root) for path in images}
    files = {path: _mask_files(path, images_root, masks_root, label_maps) for path in images}
    owners = Counter(mask for masks in files.values() for mask in masks)
    log = SkipLog(strict)
    instances: list[Instance] = []
    for image_path, masks in files.items():
        category = _category(image_path, images_root)
        if categories and category not in categories:
            continue
        try:
            if not masks:
                raise Skip("image without a mask file", "add <masks>/<sub>/<stem>.png or remove the image")
            shared = [mask for mask in masks if owners[mask] > 1]
            if shared:
                raise Skip(
                    "mask file matches several images",
                    f"{shared[0].name} matches several images; give each image its own file stem",
                )
            shapes = _shapes(image_path, masks, masks[0] in label_maps, log, min_area)
        except Skip as skip:
            log.record(skip, image_path)
            continue
        for shape in shapes:
            suffix = f":{shape.value}" if shape.value is not None else ""
            instance_id = f"mask:{shape.path.relative_to(masks_root)}{suffix}"
            instances.append(Instance(image_path, category, shape, instance_id))
    return InstanceDataset.from_log(instances, log, str(masks_root))


def _category(image_path: Path, images_root: Path) -> str:
    """The first sub-folder of the image, or :data:`DEFAULT_CATEGORY`."""
    rel = image_path.relative_to(images_root)
    return rel.parts[0] if len(rel.parts) > 1 else DEFAULT_CATEGORY


def _label_map(image_path: Path, images_root: Path, masks_root: Path) -> Path:
    """Where the image's label map would be: ``<masks>/<sub>/<stem>.png``."""
    rel = image_path.relative_to(images_root)
    return masks_root / rel.parent / f"{rel.stem}.png"


def _mask_files(image_path: Path, images_root: Path, masks_root: Path, label_maps: set[Path]) -> list[Path]:
    """The image's label map, else its per-instance files (other images' label maps excluded)."""
    label_map = _label_map(image_path, images_root, masks_root)
    if label_map.is_file():
        return [label_map]
    folder, stem = label_map.parent, image_path.stem
    candidates = sorted(folder.glob(f"{stem}_*.png")) + sorted((folder / stem).glob("*.png"))
    return [path for path in candidates if path not in label_maps]


def _shapes(
    image_path: Path, masks: list[Path], label_map: bool, log: SkipLog, min_area: float
) -> list[MaskFileShape]:
    """The instances of one image's mask files; a mask or label that cannot be used is counted in ``log``.

    Raises:
        Skip: the image itself cannot be read.
    """
    size, problem = check_image_file(image_path)
    if problem is not None:
        raise Skip(*problem)
    shapes = []
    for mask in masks:
        try:
            found = _mask_shapes(mask, size, label_map)  # type: ignore[arg-type]
        except Skip as skip:
            log.record(skip, mask)
            continue
        for shape, area in found:
            if area < min_area:
                label = f" (label {shape.value})" if shape.value is not None else ""
                log.skip(f"mask smaller than {min_area:g} px", f"{mask}{label}")
            else:
                shapes.append(shape)
    return shapes


def _mask_shapes(path: Path, size: tuple[int, int], label_map: bool) -> list[tuple[MaskFileShape, int]]:
    """``(shape, area)`` per label of a label map (one for a binary map), or one for a per-instance file.

    Raises:
        Skip: unreadable, of another size than the image, or all zeros.
    """
    try:
        labels = read_mask_labels(path)
    except DataError as exc:
        raise Skip("unreadable mask file", f"{exc.problem}; replace the file") from exc
    if labels.shape != tuple(size):
        found = "x".join(str(n) for n in labels.shape)
        raise Skip("mask size differs from the image", f"the mask is {found}, the image {size[0]}x{size[1]}")
    values = [int(v) for v in np.unique(labels) if v != 0] if label_map else []
    if not labels.any():
        raise Skip("empty mask (all zeros)", "draw the object or remove the mask file")
    if len(values) < 2:
        return [(MaskFileShape(path), int(np.count_nonzero(labels)))]
    return [(MaskFileShape(path, value=v), int(np.count_nonzero(labels == v))) for v in values]
