"""CelebAMask-HQ: ``CelebA-HQ-img/<id>.jpg`` and ``CelebAMask-HQ-mask-anno/<group>/<id:05d>_<part>.png``.

Part masks are 512 x 512 for 1024 x 1024 images; they are resized to the image (nearest neighbour).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .dataset import InstanceDataset, SkipLog
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
_MASK_RE = re.compile(r"^(?P<id>\d+)_(?P<part>[a-z_]+)\.png$")


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
    instances: list[Instance] = []
    for mask_path in sorted(masks_root.rglob("*.png")):
        match = _MASK_RE.match(mask_path.name)
        if match is None or match["part"] not in PARTS:
            log.skip("file name is not <id>_<part>.png", mask_path)
            continue
        part = match["part"]
        if categories and part not in categories:
            continue
        image_path = images_root / f"{int(match['id'])}.jpg"
        if not image_path.is_file():
            log.skip("image file missing", image_path)
            continue
        shape = MaskFileShape(mask_path, resize=True)
        instances.append(Instance(image_path, part, shape, f"celebamask:{int(match['id'])}:{part}"))
    return InstanceDataset.from_log(instances, log, str(root))
