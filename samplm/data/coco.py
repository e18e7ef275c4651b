"""COCO instances JSON (polygons, RLE; XYWH boxes converted to XYXY)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..geometry import xywh_to_xyxy
from .dataset import InstanceDataset, SkipLog
from .instance import Instance, PolygonShape, RLEShape


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

    Args:
        annotations: the JSON file.
        images_dir: folder the ``file_name`` entries are relative to (default: the JSON's folder).
        categories: category names to keep (default: all).
        min_area: annotations smaller than this many pixels are skipped.
        include_crowd: keep ``iscrowd=1`` annotations (skipped by default).
        strict: raise :class:`DataError` on the first problem instead of skipping and counting.
    """
    path = Path(annotations)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(path, "annotation file does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"is not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataError(path, "not a COCO instances file (needs 'images', 'annotations', 'categories')")
    root = Path(images_dir) if images_dir is not None else path.parent
    names = {c["id"]: c["name"] for c in data["categories"]}
    if categories:
        unknown = sorted(set(categories) - set(names.values()))
        if unknown:
            raise DataError(path, f"unknown categories {unknown}; available: {sorted(set(names.values()))}")
    images = {img["id"]: img for img in data["images"]}
    log = SkipLog(strict)
    exists: dict[int, bool] = {}
    instances: list[Instance] = []
    for ann in data["annotations"]:
        name = names.get(ann.get("category_id"))
        where = f"{path} (annotation id {ann.get('id')})"
        if name is None:
            log.skip("annotation with unknown category_id", where)
            continue
        if categories and name not in categories:
            continue
        image = images.get(ann.get("image_id"))
        if image is None:
            log.skip("annotation with unknown image_id", where)
            continue
        image_path = root / image["file_name"]
        if image["id"] not in exists:
            exists[image["id"]] = image_path.is_file()
        if not exists[image["id"]]:
            log.skip("image file missing", image_path)
            continue
        if ann.get("iscrowd", 0) and not include_crowd:
            log.skip("crowd annotation", where)
            continue
        size = (int(image["height"]), int(image["width"]))
        shape, area = _shape(ann.get("segmentation"), size)
        if shape is None:
            log.skip("missing or malformed segmentation", where)
            continue
        if area < min_area:
            log.skip(f"mask smaller than {min_area:g} px", where)
            continue
        box = xywh_to_xyxy(ann["bbox"]) if ann.get("bbox") else None
        instances.append(Instance(image_path, name, shape, f"coco:{ann.get('id')}", image_size=size, box=box))
    return InstanceDataset.from_log(instances, log, str(path))


def _shape(segmentation, size: tuple[int, int]):
    """(shape, area in pixels) or (None, 0) for an unusable segmentation."""
    if isinstance(segmentation, list):
        polygons = []
        for flat in segmentation:
            points = np.asarray(flat, dtype=np.float64)
            if points.ndim == 1 and points.size >= 6 and points.size % 2 == 0 and np.isfinite(points).all():
                polygons.append(points.reshape(-1, 2))
        if not polygons:
            return None, 0.0
        return PolygonShape(tuple(polygons)), float(sum(_shoelace(p) for p in polygons))
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != list(size):
            return None, 0.0
        shape = RLEShape(segmentation)
        try:
            area = float(shape.rasterize(*size).sum())
        except ValueError:
            return None, 0.0
        return shape, area
    return None, 0.0


def _shoelace(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
