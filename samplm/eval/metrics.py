"""Mask metrics: IoU, boundary IoU (as HQ-SAM: boundary band of 2% of the image diagonal), mean IoU
per class and overall, and COCO mask AP through pycocotools.

Conventions: masks are ``H x W`` bool arrays at the original image resolution. Two empty masks have
IoU 1 (nothing to find, nothing found); one empty and one non-empty mask have IoU 0.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from ..utils.geometry import rle_encode


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def boundary_width(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """Width in pixels of the boundary band: ``round(dilation_ratio * diagonal)``, at least 1."""
    return max(1, round(dilation_ratio * math.hypot(height, width)))


def boundary_band(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of the mask within ``width`` pixels of its outside (the image border counts as outside)."""
    mask = np.asarray(mask, bool)
    padded = np.pad(mask, 1).astype(np.uint8)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=width)[1:-1, 1:-1].astype(bool)
    return mask & ~eroded


def boundary_iou(pred: np.ndarray, gt: np.ndarray, dilation_ratio: float = 0.02) -> float:
    """Boundary IoU: IoU of the two masks' boundary bands (band width from :func:`boundary_width`)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    width = boundary_width(*gt.shape, dilation_ratio=dilation_ratio)
    return iou(boundary_band(pred, width), boundary_band(gt, width))


def mean_by_class(values: Iterable[tuple[str, float]]) -> dict[str, float]:
    """``{class: mean}`` plus ``"all"``: the mean over every instance (the paper's per-task mIoU).

    The paper's "Average" over several parts is the mean of the per-class values; reports show both.
    """
    groups: dict[str, list[float]] = defaultdict(list)
    everything: list[float] = []
    for name, value in values:
        groups[name].append(value)
        everything.append(value)
    result = {name: float(np.mean(v)) for name, v in sorted(groups.items())}
    result["all"] = float(np.mean(everything)) if everything else float("nan")
    return result


def coco_mask_ap(
    gts: Sequence[np.ndarray | dict],
    preds: Sequence[np.ndarray | dict],
    scores: Sequence[float],
    categories: Sequence[str],
) -> dict[str, float] | None:
    """COCO mask AP (AP, AP50, AP75) with one prediction per ground-truth instance.

    Instance ``i`` lives alone in pseudo-image ``i``; ``scores`` rank predictions across instances.
    Masks are ``H x W`` bool arrays or their COCO RLEs (:func:`~samplm.utils.geometry.rle_encode`).
    Returns ``None`` for no instance.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted(set(categories))
    ids = {name: i + 1 for i, name in enumerate(names)}
    images, annotations, detections = [], [], []
    for index, (gt, pred, score, name) in enumerate(zip(gts, preds, scores, categories, strict=True)):
        annotations.append(coco_annotation(index + 1, index, ids[name], gt))
        h, w = (int(v) for v in annotations[-1]["segmentation"]["size"])
        images.append({"id": index, "height": h, "width": w})
        det = pred if isinstance(pred, dict) else rle_encode(pred)
        detections.append(
            {"image_id": index, "category_id": ids[name], "segmentation": det, "score": float(score)}
        )
    if not annotations:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluate_segm(COCO, COCOeval, images, annotations, detections, ids)


def coco_annotation(ann_id: int, image_id: int, category_id: int, mask: np.ndarray | dict) -> dict:
    """A COCO ground-truth annotation of an ``H x W`` bool mask or its COCO RLE (RLE, area, XYWH box, not
    a crowd)."""
    import pycocotools.mask as mask_utils

    rle = mask if isinstance(mask, dict) else rle_encode(mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": rle,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 0,
    }


def evaluate_segm(
    coco_cls: type, eval_cls: type, images: list[dict], annotations: list[dict], detections: list[dict], ids
) -> dict[str, float]:
    """COCO mask AP, AP50 and AP75 (0-1) of ``detections`` against ``annotations`` on ``images``
    (``ids``: ``{category name: id}``), with pycocotools' ``COCO`` and ``COCOeval`` classes given."""
    ground_truth = coco_cls()
    ground_truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in ids.items()],
    }
    ground_truth.createIndex()
    results = ground_truth.loadRes(detections)
    evaluator = eval_cls(ground_truth, results, iouType="segm")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    stats = evaluator.stats
    return {"AP": float(stats[0]), "AP50": float(stats[1]), "AP75": float(stats[2])}
