"""COCO instances JSON (polygons, RLE; XYWH boxes converted to XYXY).

Structural problems of the ``images`` and ``categories`` tables (an entry without a ``file_name``,
``height``, ``width`` or ``name``, two categories with one id) are a :class:`DataError`. Problems of
single annotations, and of the image files they point to (missing, unreadable, or not the declared
size), skip the annotation and are counted, or raise in strict mode.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..utils.geometry import xywh_to_xyxy
from .dataset import InstanceDataset, Skip, SkipLog, data_error
from .images import check_image_file
from .instance import Instance, MaskShape, PolygonShape, RLEShape

_TABLES = ("images", "annotations", "categories")
_FIX_IMAGE = "give every image an 'id', a 'file_name' and 'height' and 'width' in pixels"
_FIX_CATEGORY = "give every category an 'id' and a 'name'"
_MALFORMED_SEGMENTATION = "missing or malformed segmentation"
_FIX_SEGMENTATION = (
    "give polygons as [[x1, y1, x2, y2, ...]] or RLE as {'size': [height, width], 'counts': ...}"
)
CocoId = int | str


def read_coco(
    annotations: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    *,
    categories: Sequence[str] | None = None,
    min_area: float = 4.0,
    include_crowd: bool = False,
    strict: bool = False,
) -> InstanceDataset:
    """Read a COCO instances file.

    Instance ids are ``coco:<annotation id>``; an id that several annotations share (or a missing one)
    gets the annotation's position in the file appended (``coco:5#12``), or fails in strict mode.

    Args:
        annotations: the JSON file.
        images_dir: folder the ``file_name`` entries are relative to (default: the JSON's folder).
        categories: category names to keep (default: all).
        min_area: annotations smaller than this many pixels are skipped.
        include_crowd: keep ``iscrowd=1`` annotations (skipped by default).
        strict: raise :class:`DataError` on the first problem instead of skipping and counting.

    Raises:
        DataError: unreadable file, malformed ``images`` / ``categories`` entries, unknown
            ``categories``; in strict mode also the first skipped annotation.
    """
    path = Path(annotations)
    data = _load(path)
    names = _category_names(path, data["categories"])
    if categories:
        unknown = sorted(set(categories) - set(names.values()))
        if unknown:
            raise DataError(path, f"unknown categories {unknown}; available: {sorted(set(names.values()))}")
    log = SkipLog(strict)
    images, shared = _image_table(path, data["images"], strict)
    root = Path(images_dir) if images_dir is not None else path.parent
    reader = _Reader(root, names, images, shared, set(categories or ()), min_area, include_crowd)
    instances: list[Instance] = []
    ids = _instance_ids(path, data["annotations"], strict)
    for index, (ann, instance_id) in enumerate(zip(data["annotations"], ids, strict=True)):
        try:
            instance = reader.instance(ann, instance_id)
        except Skip as skip:
            log.record(skip, _where(path, ann, index))
            continue
        if instance is not None:
            instances.append(instance)
    return InstanceDataset.from_log(instances, log, str(path))


@dataclass(frozen=True)
class _Image:
    """One valid ``images`` entry; ``size`` is the declared ``(height, width)``."""

    id: CocoId
    file_name: str
    size: tuple[int, int]


@dataclass
class _Reader:
    """Turns annotations into instances, checking each image file once."""

    root: Path
    names: dict[CocoId, str]
    images: dict[CocoId, _Image]
    shared: dict[CocoId, list[str]]
    wanted: set[str] = field(default_factory=set)
    min_area: float = 4.0
    include_crowd: bool = False
    checked: dict[CocoId, tuple[str, str] | None] = field(default_factory=dict)

    def instance(self, ann: object, instance_id: str) -> Instance | None:
        """The annotation's instance; ``None`` for another category.

        Raises:
            Skip: the annotation cannot be used.
        """
        if not isinstance(ann, dict):
            raise Skip("malformed annotation (not a JSON object)", "each annotation must be a JSON object")
        name = self.names.get(_id(ann.get("category_id")))
        if name is None:
            raise Skip("annotation with unknown category_id", "use an id from 'categories'")
        if self.wanted and name not in self.wanted:
            return None
        image = self._image(_id(ann.get("image_id")))
        iscrowd = ann.get("iscrowd", 0)
        if isinstance(iscrowd, str) or iscrowd not in (0, 1):
            raise Skip("malformed iscrowd", "'iscrowd' must be 0 or 1")
        if iscrowd and not self.include_crowd:
            raise Skip("crowd annotation")
        box = _box(ann.get("bbox"))
        shape, area = _shape(ann.get("segmentation"), image.size)
        if area < self.min_area:
            raise Skip(f"mask smaller than {self.min_area:g} px")
        return Instance(self.root / image.file_name, name, shape, instance_id, image_size=image.size, box=box)

    def _image(self, image_id: CocoId | None) -> _Image:
        """The annotation's image, if its entry is unambiguous and its file usable.

        Raises:
            Skip: unknown or shared image id, missing or unreadable file, or not the declared size.
        """
        if image_id in self.shared:
            files = " and ".join(repr(name) for name in self.shared[image_id])
            raise Skip(
                "image id shared by several images",
                f"image id {image_id} is {files}; give every image a unique id",
            )
        image = self.images.get(image_id)  # type: ignore[arg-type]
        if image is None:
            raise Skip("annotation with unknown image_id", "use an id from 'images'")
        if image.id not in self.checked:
            self.checked[image.id] = check_image_file(self.root / image.file_name, image.size)[1]
        problem = self.checked[image.id]
        if problem is not None:
            raise Skip(*problem, where=f"{self.root / image.file_name} (image id {image.id})")
        return image


def _load(path: Path) -> dict:
    """The parsed file, with the three tables checked to be lists."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(path, "annotation file does not exist") from exc
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad UTF-8, JSON, huge numbers
        raise data_error(path, f"is not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict) or not set(_TABLES) <= set(data):
        raise DataError(path, "not a COCO instances file (needs 'images', 'annotations', 'categories')")
    for table in _TABLES:
        if not isinstance(data[table], list):
            raise DataError(path, f"'{table}' is not a list; a COCO instances file has a list of {table}")
    return data


def _category_names(path: Path, entries: list) -> dict[CocoId, str]:
    """``{category id: name}``; a malformed entry or an id given two names is a :class:`DataError`."""
    names: dict[CocoId, str] = {}
    for index, raw in enumerate(entries):
        entry, category_id, where = _entry_with_id(path, "categories", "category", index, raw, _FIX_CATEGORY)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise data_error(where, f"no valid 'name'; {_FIX_CATEGORY}")
        if names.setdefault(category_id, name) != name:
            raise data_error(
                where, f"used by {names[category_id]!r} and {name!r}; give every category its own id"
            )
    return names


def _image_table(
    path: Path, entries: list, strict: bool
) -> tuple[dict[CocoId, _Image], dict[CocoId, list[str]]]:
    """``({id: image}, {id shared by different entries: their file names})``.

    Identical repeated entries are one image. In strict mode a shared id is a :class:`DataError`.
    """
    images: dict[CocoId, _Image] = {}
    shared: dict[CocoId, list[str]] = {}
    for index, entry in enumerate(entries):
        image = _image_entry(path, index, entry)
        known = images.get(image.id)
        if image.id in shared:
            shared[image.id].append(image.file_name)
        elif known is None:
            images[image.id] = image
        elif known != image:
            if strict:
                raise data_error(
                    f"{path} (image id {image.id})",
                    f"the id is shared by {known.file_name!r} and {image.file_name!r}; "
                    "give every image a unique id",
                )
            shared[image.id] = [known.file_name, image.file_name]
            del images[image.id]
    return images, shared


def _entry_with_id(
    path: Path, table: str, label: str, index: int, entry: object, fix: str
) -> tuple[dict, CocoId, str]:
    """A ``table`` entry that must be a JSON object with a valid ``id``: ``(entry, id, where)``, where
    ``where`` names it in messages (``<file> (<label> id <id>)``); otherwise a :class:`DataError`."""
    where = f"{path} ({table}[{index}])"
    if not isinstance(entry, dict):
        raise data_error(where, f"not a JSON object; {fix}")
    entry_id = _id(entry.get("id"))
    if entry_id is None:
        raise data_error(where, f"no valid 'id'; {fix}")
    return entry, entry_id, f"{path} ({label} id {entry_id})"


def _image_entry(path: Path, index: int, entry: object) -> _Image:
    """One ``images`` entry, checked."""
    entry, image_id, where = _entry_with_id(path, "images", "image", index, entry, _FIX_IMAGE)
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        raise data_error(where, f"no valid 'file_name'; {_FIX_IMAGE}")
    height, width = _positive_int(entry.get("height")), _positive_int(entry.get("width"))
    for key, value in (("height", height), ("width", width)):
        if value is None:
            raise data_error(where, f"no valid '{key}' (a positive integer); {_FIX_IMAGE}")
    return _Image(image_id, file_name, (height, width))  # type: ignore[arg-type]


def _instance_ids(path: Path, annotations: list, strict: bool) -> list[str]:
    """``coco:<id>`` per annotation; repeated or missing ids get ``#<position>`` (strict: an error).

    Entries that are not JSON objects get a placeholder: they are skipped and counted later.
    """
    names = [f"coco:{_id(a.get('id')) if isinstance(a, dict) else None}" for a in annotations]
    names = ["coco:" if name == "coco:None" else name for name in names]
    counts = Counter(names)
    taken = {name for name, count in counts.items() if count == 1 and name != "coco:"}
    ids = []
    for index, (name, ann) in enumerate(zip(names, annotations, strict=True)):
        if counts[name] == 1 and name != "coco:":
            ids.append(name)
            continue
        if strict and isinstance(ann, dict):
            what = f"annotation id {name[5:]}" if name != "coco:" else f"annotations[{index}]"
            problem = f"{counts[name]} annotations have this id" if name != "coco:" else "no valid 'id'"
            raise data_error(f"{path} ({what})", f"{problem}; give every annotation a unique id")
        candidate = f"{name}#{index}"
        while candidate in taken:
            candidate += "#"
        taken.add(candidate)
        ids.append(candidate)
    return ids


def _where(path: Path, ann: object, index: int) -> str:
    """``<file> (annotation id N)``, or its position when it has no id."""
    ann_id = _id(ann.get("id")) if isinstance(ann, dict) else None
    return f"{path} (annotation id {ann_id})" if ann_id is not None else f"{path} (annotations[{index}])"


def _id(value: object) -> CocoId | None:
    """A COCO id: an integer or a string (``None`` for anything else, booleans included)."""
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None


def _positive_int(value: object) -> int | None:
    """A positive integer given as an integer, an integral float or a decimal string, else ``None``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _numbers(values: object) -> np.ndarray | None:
    """A list of finite JSON numbers as float64, else ``None``."""
    if not isinstance(values, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    ):
        return None
    try:
        array = np.asarray(values, dtype=np.float64)
    except OverflowError:  # integers beyond float range
        return None
    return array if np.isfinite(array).all() else None


def _box(value: object) -> tuple[float, float, float, float] | None:
    """XYXY from a COCO ``bbox`` (``None`` when absent).

    Raises:
        Skip: not four finite numbers with a non-negative width and height.
    """
    if value is None or value == []:
        return None
    numbers = _numbers(value)
    if numbers is None or numbers.size != 4 or (numbers[2:] < 0).any():
        raise Skip("malformed bbox", "give 'bbox' as [x, y, width, height] in pixels")
    return xywh_to_xyxy(numbers.tolist())


def _shape(segmentation: object, size: tuple[int, int]) -> tuple[MaskShape, float]:
    """(shape, area in pixels) of a segmentation drawn at the declared ``size``.

    Raises:
        Skip: missing or malformed segmentation, or polygons far outside the image.
    """
    if isinstance(segmentation, list):
        return _polygons(segmentation, size)
    if isinstance(segmentation, dict) and _valid_rle(segmentation, size):
        shape = RLEShape(segmentation)
        try:
            return shape, float(shape.rasterize(*size).sum())
        except (ValueError, TypeError, OverflowError):
            pass
    raise Skip(_MALFORMED_SEGMENTATION, _FIX_SEGMENTATION)


def _polygons(segmentation: list, size: tuple[int, int]) -> tuple[MaskShape, float]:
    """Polygons from ``[[x1, y1, ...], ...]``; ones with fewer than three points are dropped."""
    polygons = []
    for flat in segmentation:
        points = _numbers(flat)
        if points is None or points.size % 2:
            raise Skip(_MALFORMED_SEGMENTATION, _FIX_SEGMENTATION)
        if points.size >= 6:
            polygons.append(points.reshape(-1, 2))
    if not polygons:
        raise Skip(_MALFORMED_SEGMENTATION, _FIX_SEGMENTATION)
    height, width = size
    for points in polygons:  # beyond a margin of one image size: garbage or another image's scale
        if (
            not ((-width <= points[:, 0]) & (points[:, 0] <= 2 * width)).all()
            or not ((-height <= points[:, 1]) & (points[:, 1] <= 2 * height)).all()
        ):
            raise Skip(
                "segmentation outside the image", "check the polygon coordinates (pixels of this image)"
            )
    return PolygonShape(tuple(polygons)), float(sum(_shoelace(p) for p in polygons))


def _valid_rle(rle: dict, size: tuple[int, int]) -> bool:
    """An RLE of the declared ``size`` with string counts, or list counts that fill it exactly."""
    dims, counts = rle.get("size"), rle.get("counts")
    if not isinstance(dims, list) or [_positive_int(v) for v in dims] != list(size):
        return False
    if isinstance(counts, str):
        return True
    if not isinstance(counts, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) for c in counts
    ):
        return False
    return all(c >= 0 for c in counts) and sum(counts) == math.prod(size)


def _shoelace(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
