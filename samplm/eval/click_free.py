"""Click-free evaluation: COCO mask AP of automatic segmentation, and the one-shot comparison.

A *method* is an :class:`~samplm.segment.generator.AdapterMaskGenerator` run with one of the predictor's
adapters (or the base decoder). Every method sees the same images, encoded once each.

* :func:`evaluate_ap`: COCO mask AP / AP50 / AP75 (pycocotools ``COCOeval``) over a dataset, every
  instance of every image a ground truth, every record a detection ranked by its ``score``.
* :func:`evaluate_one_shot`: one reference image + mask per object, the object's other images as
  targets; the mIoU of each method's top-scored mask (or, for an upper bound, of its best-matching mask).
* :func:`one_shot_methods`: the comparison of PerSAM's training-free setting (prior + base decoder),
  PerSAM-F (+ two mask weights fitted on the reference), prior + adapter, and SAM's grid generator
  (each click's most confident mask, no thresholds) with the best-matching mask (an upper bound of
  what the base can segment without clicks).
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..adapter.prototype import TargetPrototype
from ..data import InstanceDataset
from ..data.images import load_image
from ..decoder.predictor import CustomSamPredictor
from ..prompts.location_prior import PriorSettings, location_prior
from ..segment.generator import AdapterMaskGenerator
from ..segment.jobs import to_coco_rle
from ..segment.prototype_fitting import fit_prototype
from ..train.targets import to_low_res
from ..utils.progress import progress_bar
from .metrics import coco_annotation, evaluate_segm, iou
from .samf import fit_blend

#: PerSAM's prior: the single most similar cell positive, the least similar negative.
PERSAM_PRIOR = PriorSettings(min_similarity=-1.0, relative=0.0, max_clicks=1, negatives=1)


@dataclass(frozen=True)
class AutoMethod:
    """One way of segmenting without clicks.

    Attributes:
        name: row label.
        adapter_name: the predictor's adapter to decode with (``None``: base decoder).
        generator: the mask generator.
        upper_bound: score by the best-matching mask instead of the top-scored one (one-shot mIoU).
    """

    name: str
    adapter_name: str | None
    generator: AdapterMaskGenerator
    upper_bound: bool = False

    def run(self, predictor: CustomSamPredictor, image: np.ndarray) -> list[dict]:
        with predictor.use_adapter(self.adapter_name):
            return self.generator.generate(image)


@dataclass(frozen=True)
class OneShotCase:
    """One object: its reference and its targets (``H x W x 3`` uint8 images, ``H x W`` bool masks)."""

    name: str
    reference: tuple[np.ndarray, np.ndarray]
    targets: Sequence[tuple[np.ndarray, np.ndarray]]
    adapter_name: str | None = None


def evaluate_ap(
    predictor: CustomSamPredictor,
    dataset: InstanceDataset,
    methods: Sequence[AutoMethod],
    *,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """COCO mask AP of each method on every image of ``dataset`` (one category).

    Returns:
        ``{method: {"AP", "AP50", "AP75", "seconds_per_image", "detections"}}`` (AP values in 0-1).
    """
    groups = dataset.by_image()
    images, annotations = [], []
    detections: dict[str, list[dict]] = {m.name: [] for m in methods}
    seconds = dict.fromkeys(detections, 0.0)
    for image_id, (path, instances) in enumerate(
        progress_bar(groups.items(), desc="click-free AP", unit="img", disable=not progress), 1
    ):
        image = load_image(path, instances[0].image_size)
        h, w = image.shape[:2]
        images.append({"id": image_id, "height": h, "width": w})
        for inst in instances:
            annotations.append(coco_annotation(len(annotations) + 1, image_id, 1, inst.mask(h, w)))
        predictor.set_image(image)  # encoded once; every method reuses it
        for method in methods:
            start = time.perf_counter()
            records = method.run(predictor, image)
            seconds[method.name] += time.perf_counter() - start
            detections[method.name] += [_detection(image_id, r) for r in records]
    results = {}
    for method in methods:
        found = detections[method.name]
        with contextlib.redirect_stdout(io.StringIO()):
            metrics = (
                evaluate_segm(COCO, COCOeval, images, annotations, found, {"object": 1})
                if found
                else {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
            )
        results[method.name] = {
            **metrics,
            "seconds_per_image": seconds[method.name] / max(len(images), 1),
            "detections": float(len(found)),
        }
    return results


def _detection(image_id: int, record: dict) -> dict:
    rle = to_coco_rle(record["segmentation"])  # any output_mode
    return {"image_id": image_id, "category_id": 1, "segmentation": rle, "score": float(record["score"])}


def evaluate_one_shot(
    predictor: CustomSamPredictor,
    cases: Sequence[OneShotCase],
    *,
    samf_steps: int = 1000,
    grid_points: int = 16,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """mIoU of the :func:`one_shot_methods` on each case's targets.

    Returns:
        ``{method: {case name: mIoU, ..., "all": mean over every target}}`` (0-1).
    """
    per_target: dict[str, dict[str, list[float]]] = {}
    for case in progress_bar(cases, desc="one-shot", unit="object", disable=not progress):
        methods = one_shot_methods(
            predictor, case.reference, case.adapter_name, samf_steps=samf_steps, grid_points=grid_points
        )
        for image, mask in case.targets:
            predictor.set_image(image)
            for method in methods:
                records = method.run(predictor, image)
                scores = [iou(r["segmentation"], mask) for r in records] or [0.0]
                value = max(scores) if method.upper_bound else scores[0]
                per_target.setdefault(method.name, {}).setdefault(case.name, []).append(value)
    table = {}
    for name, by_case in per_target.items():
        row = {case: float(np.mean(values)) for case, values in by_case.items()}
        row["all"] = float(np.mean([v for values in by_case.values() for v in values]))
        table[name] = row
    return table


def one_shot_methods(
    predictor: CustomSamPredictor,
    reference: tuple[np.ndarray, np.ndarray],
    adapter_name: str | None,
    *,
    prior: PriorSettings = PERSAM_PRIOR,
    samf_steps: int = 1000,
    grid_points: int = 16,
) -> list[AutoMethod]:
    """PerSAM, PerSAM-F, prior + adapter (if ``adapter_name``) and the grid upper bound, for one
    reference ``(image, mask)``; all prompted by the prototype fitted on it."""
    prototype = fit_prototype(predictor, [reference])
    weights = fit_persam_f(predictor, prototype, reference, prior, steps=samf_steps)

    def prior_generator(**options) -> AdapterMaskGenerator:
        return AdapterMaskGenerator(predictor, prototype=prototype, prior=prior, **options)

    methods = [
        AutoMethod("PerSAM (prior + base decoder)", None, prior_generator()),
        AutoMethod("PerSAM-F (prior + 2 fitted weights)", None, prior_generator(mask_weights=weights)),
    ]
    if adapter_name is not None:
        methods.append(AutoMethod("prior + adapter", adapter_name, prior_generator()))
    grid = AdapterMaskGenerator(
        predictor,
        prompts="grid",
        points_per_side=grid_points,
        pred_iou_thresh=0,
        stability_score_thresh=0,
        best_mask_only=True,
    )
    methods.append(AutoMethod("SAM grid AMG, best match (upper bound)", None, grid, upper_bound=True))
    return methods


@torch.no_grad()
def _reference_logits(
    predictor: CustomSamPredictor, prototype: TargetPrototype, reference, prior: PriorSettings
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The base decoder's three low-res logits for the prior's clicks on the reference, and the
    reference mask on the same grid: ``(K x 3 x L x L, K x 1 x L x L)``; ``None`` without a click."""
    image, mask = reference
    predictor.set_image(image)
    img_size = predictor.base.image_size
    found = location_prior(predictor.features, prototype, tuple(predictor.input_size), img_size, prior)
    coords, labels = found.prompts()
    if not len(coords):
        return None
    with predictor.use_adapter(None):
        output = predictor.decode(coords.to(predictor.device), labels.to(predictor.device))
    logits = output.low_res_logits.float().cpu()
    low = to_low_res(mask, tuple(predictor.input_size), img_size, logits.shape[-1])
    target = torch.as_tensor(low, dtype=torch.float32)[None, None].expand(len(logits), -1, -1, -1)
    return logits, target


def fit_persam_f(
    predictor: CustomSamPredictor,
    prototype: TargetPrototype,
    reference: tuple[np.ndarray, np.ndarray],
    prior: PriorSettings = PERSAM_PRIOR,
    *,
    steps: int = 1000,
    lr: float = 1e-3,
) -> tuple[float, float, float]:
    """PerSAM-F: two weights blending the base decoder's three masks, fitted on the reference image
    (prompted by the prior) to its mask with PerSAM-F's schedule (1,000 Adam steps at lr 1e-3 from
    1/3 each, which keeps the weights near a convex blend). Returns the three weights."""
    found = _reference_logits(predictor, prototype, reference, prior)
    if found is None:  # the prior finds no click on the reference: nothing to fit
        return (1 / 3, 1 / 3, 1 / 3)
    logits, target = found
    return fit_blend(logits, target, steps=steps, lr=lr, batch_size=len(logits)).weights
