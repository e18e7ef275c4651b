"""An image folder plus a folder of mask PNGs.

For an image ``<images>/<sub>/<stem>.<ext>`` the masks are looked up in ``<masks>/<sub>/``:

- ``<stem>.png``: a label map; each distinct non-zero value is one instance (a binary 0/1 or 0/255
  mask is one instance) - the PerSeg layout ``Images/<obj>/NN.jpg`` + ``Annotations/<obj>/NN.png``;
- ``<stem>_<k>.png`` or ``<stem>/<k>.png``: one instance per file (its non-zero pixels).

The category of an instance is the first sub-folder of its image (``<obj>`` above), or ``"object"`` for
images directly in ``<images>``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import InstanceDataset, SkipLog
from .images import find_images, read_mask_file
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
    log = SkipLog(strict)
    instances: list[Instance] = []
    seen: set[str] = set()
    for image_path in images:
        rel = image_path.relative_to(images_root)
        category = rel.parts[0] if len(rel.parts) > 1 else DEFAULT_CATEGORY
        seen.add(category)
        if categories and category not in categories:
            continue
        mask_dir = masks_root / rel.parent
        label_map = mask_dir / f"{rel.stem}.png"
        per_instance = sorted(mask_dir.glob(f"{rel.stem}_*.png")) + sorted(
            (mask_dir / rel.stem).glob("*.png")
        )
        if not label_map.is_file() and not per_instance:
            log.skip("image without a mask file", image_path)
            continue
        if label_map.is_file():
            labels = _label_values(label_map)
            shapes = [MaskFileShape(label_map, value=v if len(labels) > 1 else None) for v in labels]
        else:
            shapes = [MaskFileShape(p) for p in per_instance]
        for shape in shapes:
            area = read_mask_file(shape.path, shape.value).sum()
            if area < min_area:
                log.skip(f"mask smaller than {min_area:g} px", shape.path)
                continue
            suffix = f":{shape.value}" if shape.value is not None else ""
            instances.append(
                Instance(image_path, category, shape, f"mask:{shape.path.relative_to(masks_root)}{suffix}")
            )
    if categories:
        unknown = sorted(set(categories) - seen)
        if unknown:
            raise DataError(images_root, f"unknown categories {unknown}; available: {sorted(seen)}")
    return InstanceDataset.from_log(instances, log, str(masks_root))


def _label_values(path: Path) -> list[int]:
    labels = np.unique(read_mask_file_raw(path))
    return [int(v) for v in labels if v != 0]


def read_mask_file_raw(path: Path) -> np.ndarray:
    """The label values of a mask image (palette indices for palette PNGs)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            values = np.asarray(image.convert("L") if image.mode in ("RGB", "RGBA") else image)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(path, f"cannot be read as a mask image ({exc})") from exc
    return values[..., 0] if values.ndim == 3 else values
