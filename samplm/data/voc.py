"""Pascal VOC XML boxes; each box becomes a rectangle mask (as the paper did for license plates)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError
from .dataset import InstanceDataset, SkipLog
from .images import IMAGE_SUFFIXES
from .instance import BoxShape, Instance


def default_voc_images_dir(annotations_dir: Path) -> Path:
    """``JPEGImages`` or ``images`` beside the annotations folder, else the annotations folder."""
    for name in ("JPEGImages", "images"):
        candidate = annotations_dir.parent / name
        if candidate.is_dir():
            return candidate
    return annotations_dir


def read_voc(
    annotations_dir: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    *,
    categories: Sequence[str] | None = None,
    min_area: float = 4.0,
    strict: bool = False,
) -> InstanceDataset:
    """Read one VOC XML file per image.

    Box coordinates are taken as pixel coordinates of the box edges (XYXY) and clipped to the image.

    Args:
        annotations_dir: folder of ``*.xml`` files (or a single XML file).
        images_dir: folder of the images (default: :func:`default_voc_images_dir`).
        categories: object names to keep (default: all).
        min_area: boxes smaller than this many pixels are skipped.
        strict: raise :class:`DataError` on the first problem instead of skipping and counting.
    """
    root = Path(annotations_dir)
    if not root.exists():
        raise DataError(root, "annotations folder does not exist")
    files = [root] if root.is_file() else sorted(root.glob("*.xml"))
    if not files:
        raise DataError(root, "no .xml annotation files found")
    images_root = (
        Path(images_dir)
        if images_dir is not None
        else default_voc_images_dir(root if root.is_dir() else root.parent)
    )
    log = SkipLog(strict)
    instances: list[Instance] = []
    seen: set[str] = set()
    for xml_path in files:
        try:
            tree = ET.parse(xml_path).getroot()
        except ET.ParseError as exc:
            log.skip(f"unreadable XML ({exc})", xml_path)
            continue
        image_path = _image_path(tree, xml_path, images_root)
        if image_path is None:
            log.skip("image file missing", xml_path)
            continue
        try:
            size = (int(float(tree.findtext("size/height"))), int(float(tree.findtext("size/width"))))
        except (TypeError, ValueError):
            size = None
        for index, obj in enumerate(tree.findall("object")):
            name = (obj.findtext("name") or "").strip()
            seen.add(name)
            if categories and name not in categories:
                continue
            try:
                box = tuple(float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                log.skip("object without a numeric bndbox", xml_path)
                continue
            x1, y1, x2, y2 = box
            if size is not None:
                x1, x2 = max(0.0, x1), min(float(size[1]), x2)
                y1, y2 = max(0.0, y1), min(float(size[0]), y2)
            if x2 <= x1 or y2 <= y1:
                log.skip("degenerate box", xml_path)
                continue
            if (x2 - x1) * (y2 - y1) < min_area:
                log.skip(f"box smaller than {min_area:g} px", xml_path)
                continue
            clipped = (x1, y1, x2, y2)
            instances.append(
                Instance(
                    image_path,
                    name,
                    BoxShape(clipped),
                    f"voc:{xml_path.stem}:{index}",
                    image_size=size,
                    box=clipped,
                )
            )
    if categories:
        unknown = sorted(set(categories) - seen)
        if unknown:
            raise DataError(root, f"unknown categories {unknown}; available: {sorted(seen)}")
    return InstanceDataset.from_log(instances, log, str(root))


def _image_path(tree: ET.Element, xml_path: Path, images_root: Path) -> Path | None:
    filename = (tree.findtext("filename") or "").strip()
    candidates = [images_root / filename] if filename else []
    stem = Path(filename).stem if filename else xml_path.stem
    candidates += [images_root / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES]
    candidates += [images_root / f"{xml_path.stem}{suffix}" for suffix in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)
