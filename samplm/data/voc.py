"""Pascal VOC XML boxes; each box becomes a rectangle mask (as the paper did for license plates).

Problems of a whole file (unreadable XML, missing or unreadable image, malformed ``<size>`` or one that
differs from the image) skip the file and count once; problems of an object skip and count the object.
Strict mode raises on the first one instead.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .dataset import InstanceDataset, Skip, SkipLog
from .images import IMAGE_SUFFIXES, check_image_file, is_file
from .instance import BoxShape, Instance

_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")


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
    ``<size>`` is the declared image size; a ``<size>`` of 0 x 0 (a common placeholder) counts as absent.

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
    reader = _VocReader(images_root, set(categories or ()), min_area, SkipLog(strict))
    instances = [inst for xml_path in files for inst in reader.read_file(xml_path)]
    if categories:
        unknown = sorted(set(categories) - reader.seen)
        if unknown:
            raise DataError(root, f"unknown categories {unknown}; available: {sorted(reader.seen)}")
    return InstanceDataset.from_log(instances, reader.log, str(root))


@dataclass
class _VocReader:
    """Reads XML files one by one, counting what it skips in ``log`` and the names it sees."""

    images_root: Path
    wanted: set[str]
    min_area: float
    log: SkipLog
    seen: set[str] = field(default_factory=set)

    def read_file(self, xml_path: Path) -> list[Instance]:
        """The instances of one XML file (none when the file or its image cannot be used)."""
        try:
            tree = ET.parse(xml_path).getroot()
        except (ET.ParseError, ValueError, LookupError, OSError) as exc:
            self.log.skip("unreadable XML", xml_path, f"{exc}; fix or remove the file")
            return []
        objects = tree.findall("object")
        self.seen.update(name for obj in objects if (name := _name(obj)))
        try:
            image_path, size, clip = self._image(tree, xml_path)
        except Skip as skip:
            self.log.record(skip, xml_path)
            return []
        instances = []
        for index, obj in enumerate(objects):
            name = _name(obj)
            try:
                box = self._box(obj, name, clip)
            except Skip as skip:
                self.log.record(skip, f"{xml_path} (object {index})")
                continue
            if box is not None:
                instance_id = f"voc:{xml_path.stem}:{index}"
                shape = BoxShape(box)
                instances.append(Instance(image_path, name, shape, instance_id, image_size=size, box=box))
        return instances

    def _image(
        self, tree: ET.Element, xml_path: Path
    ) -> tuple[Path, tuple[int, int] | None, tuple[int, int]]:
        """``(image path, declared (H, W) or None, (H, W) to clip boxes to)``.

        Raises:
            Skip: missing or unreadable image, malformed ``<size>`` or one that differs from the image.
        """
        image_path = _image_path(tree, xml_path, self.images_root)
        if image_path is None:
            raise Skip("image file missing", "check <filename> and the images folder (--images)")
        size = _declared_size(tree)
        displayed, problem = check_image_file(image_path, size)
        if problem is not None:
            raise Skip(*problem)
        return image_path, size, size or displayed

    def _box(
        self, obj: ET.Element, name: str, clip: tuple[int, int]
    ) -> tuple[float, float, float, float] | None:
        """The object's box clipped to ``clip`` (``(H, W)``), or ``None`` for an unwanted ``name``.

        Raises:
            Skip: no name, no numeric box, or a box that is empty or too small inside the image.
        """
        if not name:
            raise Skip("object without a <name>", "give every <object> a <name>")
        if self.wanted and name not in self.wanted:
            return None
        values = _floats(obj, [f"bndbox/{key}" for key in _BOX_KEYS])
        if not all(math.isfinite(v) for v in values):
            raise Skip(
                "object without a numeric bndbox", "give <bndbox> <xmin> <ymin> <xmax> <ymax> in pixels"
            )
        x1, y1, x2, y2 = values
        x1, x2 = max(0.0, x1), min(float(clip[1]), x2)
        y1, y2 = max(0.0, y1), min(float(clip[0]), y2)
        if x2 <= x1 or y2 <= y1:
            raise Skip("degenerate box", "check that xmax > xmin and ymax > ymin inside the image")
        if (x2 - x1) * (y2 - y1) < self.min_area:
            raise Skip(f"box smaller than {self.min_area:g} px")
        return (x1, y1, x2, y2)


def _declared_size(tree: ET.Element) -> tuple[int, int] | None:
    """``(H, W)`` from ``<size>``; ``None`` when it is absent or 0 x 0.

    Raises:
        Skip: ``<size>`` without two non-negative integers.
    """
    element = tree.find("size")
    if element is None:
        return None
    values = _floats(element, ["height", "width"])
    if not all(math.isfinite(v) and v >= 0 and v.is_integer() for v in values):
        raise Skip("malformed <size>", "give <size> <width> and <height> in pixels, or remove it")
    height, width = (int(v) for v in values)
    if height == width == 0:
        return None
    if height == 0 or width == 0:
        raise Skip("malformed <size>", "give <size> <width> and <height> in pixels, or remove it")
    return height, width


def _name(obj: ET.Element) -> str:
    """The object's ``<name>``, stripped (empty when missing)."""
    return (obj.findtext("name") or "").strip()


def _floats(element: ET.Element, paths: list[str]) -> list[float]:
    """The numbers at ``paths`` below ``element``; NaN for a missing or non-numeric one."""
    values = []
    for path in paths:
        try:
            values.append(float(element.findtext(path)))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            values.append(math.nan)
    return values


def _image_path(tree: ET.Element, xml_path: Path, images_root: Path) -> Path | None:
    filename = (tree.findtext("filename") or "").strip()
    candidates = [images_root / filename] if filename else []
    stem = Path(filename).stem if filename else xml_path.stem
    candidates += [images_root / f"{stem}{suffix}" for suffix in IMAGE_SUFFIXES]
    candidates += [images_root / f"{xml_path.stem}{suffix}" for suffix in IMAGE_SUFFIXES]
    return next((c for c in candidates if is_file(c)), None)
