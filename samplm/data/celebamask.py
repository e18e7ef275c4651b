"""CelebAMask-HQ: ``CelebA-HQ-img/<id>.jpg`` and ``CelebAMask-HQ-mask-anno/<group>/<id:05d>_<part>.png``.

Part masks are 512 x 512 for 1024 x 1024 images; they are resized to the image (nearest neighbour).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .dataset import InstanceDataset, SkipLog
from .images import is_file
from .instance import Instance, MaskFileShape

PARTS = (
    "skin",
    "nose",
    "eye_g",
    "l_eye",
    "r_eye",
    "l_brow",
    "r_brow",
    "l_ear",
    "r_ear",
    "mouth",
    "u_lip",
    "l_lip",
    "hair",
    "hat",
    "ear_r",
    "neck_l",
    "neck",
    "cloth",
)
IMAGES_FOLDER = "CelebA-HQ-img"
MASKS_FOLDER = "CelebAMask-HQ-mask-anno"
_MASK_RE = re.compile(r"^(?P<id>\d{1,15})_(?P<part>[a-z_]+)\.png$")


def read_celebamask(
    root: str | os.PathLike[str],
    *,
    categories: Sequence[str] | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    strict: bool = False,
) -> InstanceDataset:
    """Read CelebAMask-HQ part masks; ``categories`` are part names (see :data:`PARTS`)."""
    root = Path(root)
    images_root = Path(images_dir) if images_dir is not None else root / IMAGES_FOLDER
    masks_root = root / MASKS_FOLDER
    for folder in (images_root, masks_root):
        if not folder.is_dir():
            raise DataError(folder, "folder does not exist (expected the CelebAMask-HQ layout)")
    if categories:
        unknown = sorted(set(categories) - set(PARTS))
        if unknown:
            raise DataError(root, f"unknown parts {unknown}; available: {list(PARTS)}")
    log = SkipLog(strict)
    masks = _part_masks(masks_root, log)
    owners = Counter(masks.values())
    instances: list[Instance] = []
    for mask_path, (image_id, part) in masks.items():
        if categories and part not in categories:
            continue
        if owners[image_id, part] > 1:
            log.skip("several masks for one image and part", mask_path, "keep one <id>_<part>.png per image")
            continue
        image_path = images_root / f"{image_id}.jpg"
        if not is_file(image_path):
            log.skip("image file missing", image_path, "check the images folder")
            continue
        shape = MaskFileShape(mask_path, resize=True)
        instances.append(Instance(image_path, part, shape, f"celebamask:{image_id}:{part}"))
    return InstanceDataset.from_log(instances, log, str(root))


def _part_masks(masks_root: Path, log: SkipLog) -> dict[Path, tuple[int, str]]:
    """``{mask file: (image id, part)}`` for every ``<id>_<part>.png``; other names are counted."""
    masks: dict[Path, tuple[int, str]] = {}
    for mask_path in sorted(masks_root.rglob("*.png")):
        match = _MASK_RE.match(mask_path.name)
        if match is None or match["part"] not in PARTS:
            log.skip(
                "file name is not <id>_<part>.png", mask_path, f"rename it; parts are {', '.join(PARTS)}"
            )
            continue
        masks[mask_path] = (int(match["id"]), match["part"])
    return masks
