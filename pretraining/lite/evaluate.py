"""Centre-click check of a ``samplm_lite`` model during pretraining: plates (boxes as rectangles) and
PerSeg (true masks), top mask by the IoU head and best of three (oracle), at the original resolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from samplm.data import read_mask_folder, read_voc
from samplm.data.images import load_image
from samplm.eval.metrics import iou
from samplm.utils.geometry import center_point

PLATES_SPLIT = {"val_fraction": 0.5, "seed": 0}


@dataclass
class EvalItem:
    image: np.ndarray
    mask: np.ndarray


def plate_split(root: Path):
    """The plate photos' (train, held-out) halves, split by content (benchmarks use the same split)."""
    return read_voc(root / "annotations", root / "images").split(**PLATES_SPLIT)


def items_of(dataset, limit: int | None = None) -> list[EvalItem]:
    out = []
    for inst in list(dataset)[:limit]:
        image = load_image(inst.image_path)
        out.append(EvalItem(image, inst.mask(*image.shape[:2])))
    return out


def perseg_items(root: Path) -> list[EvalItem]:
    return items_of(read_mask_folder(root / "Images", root / "Annotations"))


def held_out_checks(data: Path, plates: int, held_out=None) -> dict[str, list[EvalItem]]:
    """The items a run is checked on: the first ``plates`` photos of the plates' held-out half (``held_out``
    if the caller has split them already) and PerSeg's images, both under ``data``."""
    if held_out is None:
        held_out = plate_split(data / "car_license_plate_andrewmvd")[1]
    return {"plates": items_of(held_out, plates), "perseg": perseg_items(data / "perseg_persam_examples")}


@torch.no_grad()
def centre_click_miou(sam: Sam, items: list[EvalItem]) -> dict[str, float]:
    """mIoU (x100) of the top mask, the oracle of three, and the box prompt's single mask."""
    predictor = SamPredictor(sam)
    top, oracle, box = [], [], []
    for item in items:
        predictor.set_image(item.image)
        x, y = center_point(item.mask)
        masks, scores, _ = predictor.predict(np.array([[x, y]]), np.array([1]), multimask_output=True)
        ious = [iou(m, item.mask) for m in masks]
        top.append(ious[int(np.argmax(scores))])
        oracle.append(max(ious))
        ys, xs = np.nonzero(item.mask)
        single, _, _ = predictor.predict(
            box=np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]), multimask_output=False
        )
        box.append(iou(single[0], item.mask))
    return {
        "top": 100 * float(np.mean(top)),
        "oracle": 100 * float(np.mean(oracle)),
        "box": 100 * float(np.mean(box)),
    }


def checks_miou(sam: Sam, checks: dict[str, list[EvalItem]]) -> dict[str, dict[str, float]]:
    """:func:`centre_click_miou` of ``sam`` (in eval mode) on each set of :func:`held_out_checks`."""
    return {name: centre_click_miou(sam, items) for name, items in checks.items()}
