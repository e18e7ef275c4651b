"""How good the pseudo-labels are, before training on them: a click at the centre of each ground-truth
object, answered by the labels, scored by IoU at the decoder's resolution (as the hierarchy's settings
were chosen).

Rows: the hierarchy's three answers (best of them, and the largest), the smallest, the best and the largest
of the three chosen by persistence (``train --answers persistent``), anchored (``--answers anchored``),
persistent-ends and persistent-part (``--answers persistent-ends``, ``persistent-part``), the feature cut's
object (:mod:`pretraining.lite.feature_cut`, for each ``--k``), and the best of the hierarchy's answers and
the object, and the answers training uses with the cut (:func:`~pretraining.lite.feature_cut.with_object`:
the object as the largest answer). With ``--generator``, the model-in-the-loop labels too: the shipped
base's automatic mask generator (:class:`samplm.AdapterMaskGenerator`, no adapter, a ``--grid`` x ``--grid``
click grid, no filters), its best mask under the click, the best of it and the hierarchy, and how many masks
it makes on the object's photo and how many of them pass SAM's own filters (predicted IoU >= 0.88, stability
>= 0.95). Sets: the first ``--plates`` plates (objects) of the Kaggle plates' training half (boxes as
rectangles) and PerSeg's photos (true masks)::

    python -m pretraining.lite.label_check --data ../shared/data
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch

from samplm import AdapterMaskGenerator, CustomSamPredictor
from samplm.base import build_sam
from samplm.eval.metrics import iou
from samplm.utils.geometry import center_point

from .corpus import image_cells, low_res_size, resize_view, to_low_res, trunk_features
from .evaluate import EvalItem, items_of, perseg_items, plate_split
from .feature_cut import cluster_objects, object_at, spectral_embedding, with_object
from .regions import (
    anchored_levels,
    build_hierarchy,
    click_levels,
    persistent_ends_levels,
    persistent_levels,
    persistent_part_levels,
)

#: Hierarchy answers are regions of 0.2-80 % of the view, as in training.
AREA_RANGE = (0.002, 0.8)


#: Rows that are counts, not IoUs (printed as they are).
COUNTS = (
    "generator: masks on the object's photo (unfiltered)",
    "generator: masks on the object's photo passing SAM's filters",
)


class GeneratorLabels:
    """The shipped base's generator masks per photo (generated once per photo, at low resolution)."""

    def __init__(self, generator: AdapterMaskGenerator) -> None:
        self.generator = generator
        self._seen: dict[str, tuple[list[np.ndarray], int]] = {}

    def masks(self, image: np.ndarray, low: tuple[int, int]) -> tuple[list[np.ndarray], int]:
        """``(masks at low res (h, w), how many pass SAM's filters)`` of one photo."""
        key = hashlib.sha1(image.tobytes()).hexdigest()
        if key not in self._seen:
            records = self.generator.generate(image)
            confident = sum(r["predicted_iou"] >= 0.88 and r["stability_score"] >= 0.95 for r in records)
            self._seen[key] = ([to_low_res(r["segmentation"], low) for r in records], int(confident))
        return self._seen[key]

    def row(
        self, image: np.ndarray, target: np.ndarray, click: tuple[int, int], best: float
    ) -> dict[str, float]:
        """One object's generator rows: the best IoU of the masks under ``click`` (``(y, x)`` at low res),
        that or the hierarchy's ``best``, and the photo's mask counts."""
        masks, confident = self.masks(image, target.shape)
        found = max((iou(m, target) for m in masks if m[click]), default=0.0)
        return {
            "generator, best mask under the click": found,
            "best of hierarchy + generator": max(best, found),
            COUNTS[0]: float(len(masks)),
            COUNTS[1]: float(confident),
        }


def _cut_rows(features, hierarchy, answers, best, target, click, ks) -> dict[str, float]:
    """The feature-cut rows for one object: ``answers`` are the hierarchy's masks for ``click``, ``best``
    their best IoU with ``target``."""
    area = target.size
    row = {}
    embedding = spectral_embedding(features, max(1, max(ks) - 1))
    for k in ks:
        obj = object_at(cluster_objects(embedding, features.shape[1:], hierarchy.leaves, k), *click)
        trained = [
            iou(m, target) for m in with_object(answers, obj, AREA_RANGE[0] * area, AREA_RANGE[1] * area)
        ]
        row[f"feature cut k={k}"] = iou(obj, target)
        row[f"best of hierarchy + cut k={k}"] = max(best, row[f"feature cut k={k}"])
        row[f"trained answers k={k}, best of 3"] = max(trained, default=0.0)
        row[f"trained answers k={k}, largest"] = trained[-1] if trained else 0.0
    return row


@torch.no_grad()
def label_ious(
    trunk: torch.nn.Module, item: EvalItem, ks: tuple[int, ...], generator: GeneratorLabels | None
) -> dict[str, float] | None:
    """One object's IoU with each kind of label for its centre click (``None``: empty at low res)."""
    resized = resize_view(item.image)
    low = low_res_size(resized)
    features = image_cells(trunk_features(trunk, resized), resized)
    hierarchy = build_hierarchy(resized, features, low)
    target = to_low_res(item.mask, low)
    if not target.any():
        return None
    x, y = (min(int(np.rint(v)), n - 1) for v, n in zip(center_point(target), low[::-1], strict=True))
    area = low[0] * low[1]
    area_range = (AREA_RANGE[0] * area, AREA_RANGE[1] * area)
    levels = click_levels(hierarchy, y, x, *area_range)
    masks = [hierarchy.mask(r) for r in levels]
    scores = [iou(m, target) for m in masks] or [0.0]
    row = {"hierarchy, best of 3": max(scores), "hierarchy, largest": scores[-1]}
    rules = (
        ("by persistence", persistent_levels),
        ("anchored", anchored_levels),
        ("persistent-ends", persistent_ends_levels),
        ("persistent-part", persistent_part_levels),
    )
    for name, rule in rules:
        chosen = [iou(hierarchy.mask(r), target) for r in rule(hierarchy, y, x, *area_range)] or [0.0]
        row[f"hierarchy {name}, smallest"] = chosen[0]
        row[f"hierarchy {name}, best of 3"] = max(chosen)
        row[f"hierarchy {name}, largest"] = chosen[-1]
    row |= _cut_rows(features, hierarchy, masks, max(scores), target, (y, x), ks)
    if generator is not None:
        row |= generator.row(item.image, target, (y, x), max(scores))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--plates", type=int, default=12, help="first plate objects (boxes) of the training half"
    )
    parser.add_argument("--k", type=int, nargs="+", default=[3, 4, 6], help="clusters of the feature cut")
    parser.add_argument("--generator", action="store_true", help="also the shipped base's generator masks")
    parser.add_argument("--grid", type=int, default=16, help="the generator's clicks per side")
    args = parser.parse_args()
    sam = build_sam("samplm_lite").eval()
    trunk = sam.image_encoder.trunk
    generator = (
        GeneratorLabels(
            AdapterMaskGenerator(
                CustomSamPredictor(sam),
                prompts="grid",
                points_per_side=args.grid,
                pred_iou_thresh=0.0,
                stability_score_thresh=0.0,
            )
        )
        if args.generator
        else None
    )
    sets = {
        "plates (training half)": items_of(
            plate_split(args.data / "car_license_plate_andrewmvd")[0], args.plates
        ),
        "PerSeg": perseg_items(args.data / "perseg_persam_examples"),
    }
    table: dict[str, dict[str, float]] = {}
    for name, items in sets.items():
        rows = [label_ious(trunk, item, tuple(args.k), generator) for item in items]
        rows = [r for r in rows if r is not None]
        table[name] = {label: float(np.mean([r[label] for r in rows])) for label in rows[0]}
    print("| label for a centre click | " + " | ".join(table) + " |")
    print("|---|" + "---|" * len(table))
    for label in next(iter(table.values())):
        print(
            f"| {label} | "
            + " | ".join(f"{t[label] * (1 if label in COUNTS else 100):.1f}" for t in table.values())
            + " |"
        )


if __name__ == "__main__":
    main()
