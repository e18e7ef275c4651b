"""``AdapterMaskGenerator``: SAM's automatic mask generator, decoding through the active adapter.

Same settings and output records as ``segment_anything``'s ``SamAutomaticMaskGenerator`` (it is a
subclass: crop layers, crop NMS and small-region clean-up are SAM's own), with three differences:

* **Prompts.** ``prompts="grid"`` clicks a regular grid as SAM does (class-agnostic); ``"prior"``
  clicks where a :class:`~samplm.adapter.prototype.TargetPrototype` says the task's objects are
  (:mod:`samplm.prompts.location_prior`: one prompt per similarity peak, with negative clicks), so only a
  handful of prompts are decoded per image.
* **Decoder.** Prompts go through :meth:`CustomSamPredictor.decode` in batches over one image
  embedding, so the predictor's active adapter answers them (scope it with ``predictor.use_adapter``).
  Thresholds on predicted IoU and stability are applied at the decoder's low resolution, and only the
  surviving masks are upscaled. The image already set on the predictor is not encoded again.
* **Score.** Each mask gets ``score = predicted IoU x max(0, mean prototype similarity inside the
  mask)`` (without a prototype: the predicted IoU); duplicates are removed by box NMS on that score and
  records come sorted by it, ready for COCO AP.

Example::

    predictor = CustomSamPredictor(sam)
    predictor.load_adapter("./runs/plates/adapter")
    generator = AdapterMaskGenerator(predictor, prototype=TargetPrototype.load("./runs/plates/adapter"))
    records = generator.generate(image)          # [{"segmentation", "bbox", "score", ...}, ...]
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    calculate_stability_score,
    coco_encode_rle,
    is_box_near_crop_edge,
    mask_to_rle_pytorch,
    rle_to_mask,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from torch import Tensor
from torchvision.ops import batched_nms

from ..adapter.prototype import TargetPrototype, valid_cells
from ..decoder.predictor import CustomSamPredictor
from ..errors import PrototypeError
from ..eval.samf import blend_outputs
from ..prompts.location_prior import PriorSettings, prior_from_similarity
from ..prompts.user_prompts import as_rgb_uint8
from ..utils.fingerprint import update_digest

if TYPE_CHECKING:
    from ..decoder.sam2_predictor import CustomSam2Predictor

#: ``prompts`` choices: ``auto`` is ``prior`` with a prototype, else ``grid``.
PROMPT_SOURCES = ("auto", "grid", "prior")

#: Default ``(pred_iou_thresh, stability_score_thresh)`` per prompt source: SAM's for the grid; none for
#: prior clicks, which are few and already chosen by similarity (their masks are ranked by ``score``).
THRESHOLDS = {"grid": (0.88, 0.95), "prior": (0.0, 0.0)}

#: Default least ``score`` of a mask ``samplm segment`` keeps and draws (``segment_images(min_score=...)``):
#: a mask whose content is not like the target's (similarity <= 0, score 0) is never an instance; the
#: generator itself keeps every mask (COCO AP ranks them all).
MIN_SCORE = 0.1

# SamAutomaticMaskGenerator's own settings that change which masks come out.
_SAM_SETTINGS = (
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "crop_overlap_ratio",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
)

_SEGMENTATION = {"binary_mask": rle_to_mask, "uncompressed_rle": lambda rle: rle, "coco_rle": coco_encode_rle}


class AdapterMaskGenerator(SamAutomaticMaskGenerator):
    """Every instance in an image, from a grid of clicks or from a location prior, through an adapter.

    Args:
        predictor: the :class:`CustomSamPredictor` or :class:`~samplm.CustomSam2Predictor` to decode with
            (its active adapter is used; the plain base when none is active).
        prototype: the target's prototype; needed for ``prompts="prior"``, and with any prompts it
            scores masks by their similarity to the target.
        prompts: ``"grid"``, ``"prior"`` or ``"auto"`` (see :data:`PROMPT_SOURCES`).
        prior: how the similarity map becomes clicks (``prompts="prior"``).
        best_mask_only: keep only the mask with the highest predicted IoU of each prompt's three
            (default: ``True`` for ``prior`` prompts, ``False`` for the grid, as SAM does).
        mask_weights: blend each prompt's three mask logits (and predicted IoUs) with these weights
            into one mask (PerSAM-F's fitted weights, :func:`samplm.eval.samf.fit_blend`).
        pred_iou_thresh, stability_score_thresh: as SAM's; default :data:`THRESHOLDS` of the prompt
            source (SAM's 0.88 / 0.95 for the grid, 0 / 0 for prior clicks).
        points_per_side ... output_mode: as ``SamAutomaticMaskGenerator`` (``points_per_side`` and
            ``point_grids`` only matter for grid prompts).

    Raises:
        PrototypeError: ``prompts="prior"`` without a prototype, or a prototype made with another
            image encoder.
    """

    def __init__(
        self,
        predictor: CustomSamPredictor,
        *,
        prototype: TargetPrototype | None = None,
        prompts: str = "auto",
        prior: PriorSettings | None = None,
        best_mask_only: bool | None = None,
        mask_weights: tuple[float, float, float] | None = None,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float | None = None,
        stability_score_thresh: float | None = None,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if prompts not in PROMPT_SOURCES:
            raise ValueError(f"prompts must be one of {', '.join(PROMPT_SOURCES)}, got {prompts!r}")
        source = ("prior" if prototype is not None else "grid") if prompts == "auto" else prompts
        iou_default, stability_default = THRESHOLDS[source]
        super().__init__(
            _frame_of(predictor),
            points_per_side=points_per_side,
            points_per_batch=points_per_batch,
            pred_iou_thresh=iou_default if pred_iou_thresh is None else pred_iou_thresh,
            stability_score_thresh=stability_default
            if stability_score_thresh is None
            else stability_score_thresh,
            stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh,
            crop_n_layers=crop_n_layers,
            crop_nms_thresh=crop_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            point_grids=point_grids,
            min_mask_region_area=min_mask_region_area,
            output_mode=output_mode,
        )
        self.predictor: CustomSamPredictor | CustomSam2Predictor = predictor
        self.prompts = source
        if self.prompts == "prior" and prototype is None:
            raise PrototypeError(
                "prompts='prior'", "needs a target prototype (TargetPrototype.load or `samplm fit-prototype`)"
            )
        if prototype is not None:
            prototype.check_encoder(predictor.encoder_key())
        self.prototype = prototype
        self.prior = prior or PriorSettings()
        self.best_mask_only = self.prompts == "prior" if best_mask_only is None else best_mask_only
        self.mask_weights = mask_weights

    def settings(self) -> dict[str, Any]:
        """The settings its results depend on (JSON-ready): whether stored results are still current."""
        prototype = self.prototype
        return {
            "encoder": self.predictor.encoder_key(),
            "prompts": self.prompts,
            "prior": dataclasses.asdict(self.prior) if self.prompts == "prior" else None,
            "prototype": _digest([prototype.vector.numpy()]) if prototype is not None else None,
            "points": _digest(self.point_grids) if self.prompts == "grid" else None,
            "best_mask_only": self.best_mask_only,
            "mask_weights": self.mask_weights,
            **{name: getattr(self, name) for name in _SAM_SETTINGS},
        }

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of every instance found in ``image``, best first.

        Args:
            image: ``H x W x 3`` RGB uint8 (or any form :meth:`CustomSamPredictor.set_image` accepts).

        Returns:
            One record per mask, sorted by ``score``: SAM's keys (``segmentation`` in ``output_mode``,
            ``area``, ``bbox`` XYWH, ``predicted_iou``, ``point_coords`` XY original frame,
            ``stability_score``, ``crop_box`` XYWH) plus ``similarity`` (mean prototype similarity
            inside the mask, ``None`` without a prototype) and ``score``.
        """
        data = self._generate_masks(as_rgb_uint8(image))
        if self.min_mask_region_area > 0 and len(data["rles"]):
            data = self.postprocess_small_regions(
                data, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        order = np.argsort(-np.asarray(data["score"]), kind="stable")
        return [self._record(data, int(i)) for i in order]

    def _record(self, data: MaskData, i: int) -> dict[str, Any]:
        rle = data["rles"][i]
        return {
            "segmentation": _SEGMENTATION[self.output_mode](rle),
            "area": area_from_rle(rle),
            "bbox": box_xyxy_to_xywh(data["boxes"][i]).tolist(),
            "predicted_iou": float(data["iou_preds"][i]),
            "point_coords": [data["points"][i].tolist()],
            "stability_score": float(data["stability_score"][i]),
            "crop_box": box_xyxy_to_xywh(data["crop_boxes"][i]).tolist(),
            "similarity": float(data["similarity"][i]) if self.prototype is not None else None,
            "score": float(data["score"][i]),
        }

    # ------------------------------------------------------------------ one crop
    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], crop_layer_idx: int, orig_size: tuple[int, ...]
    ) -> MaskData:
        """Masks of one crop, in the original frame, duplicates removed (box NMS on ``score``)."""
        x0, y0, x1, y1 = crop_box
        self.predictor.set_image(image[y0:y1, x0:x1, :])  # free if already set
        similarity = None
        if self.prototype is not None:  # h x w, and whether each cell covers the image
            img_size = self.predictor.base.image_size
            input_size = tuple(self.predictor.input_size)
            cells = self.prototype.similarity(self.predictor.features, input_size, img_size).cpu()
            similarity = (cells, valid_cells(tuple(cells.shape), input_size, img_size))
        coords, labels, points = self._crop_prompts(crop_layer_idx, similarity)
        data = _joined(
            self._process_prompts(*batch, similarity, crop_box, orig_size)
            for batch in batch_iterator(self.points_per_batch, coords, labels, points)
        )
        keep = batched_nms(
            data["boxes"].float(), data["score"], torch.zeros(len(data["boxes"])), self.box_nms_thresh
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box for _ in range(len(data["rles"]))]).reshape(-1, 4)
        return data

    def _crop_prompts(
        self, crop_layer_idx: int, similarity: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Prompts for the image set on the predictor (``similarity``: its map and valid cells, computed
        once per crop for the prior and the scores).

        Returns:
            ``(coords B x N x 2 input frame, labels B x N, clicked points B x 2 crop frame)``.
        """
        crop_h, crop_w = self.predictor.original_size
        input_h, input_w = self.predictor.input_size
        if self.prompts == "grid":
            points = self.point_grids[crop_layer_idx] * np.array([[crop_w, crop_h]])
            coords = self.predictor.base.scale_coords(points, (crop_h, crop_w))
            coords = torch.as_tensor(coords, dtype=torch.float32)[:, None, :]
            return coords, torch.ones(len(points), 1, dtype=torch.int32), torch.as_tensor(points).float()
        img_size = self.predictor.base.image_size
        prior = prior_from_similarity(similarity[0], (input_h, input_w), img_size, self.prior)
        coords, labels = prior.prompts()
        points = torch.as_tensor(prior.positives) * torch.tensor([crop_w / input_w, crop_h / input_h])
        return coords, labels, points.float().reshape(-1, 2)

    # ------------------------------------------------------------------ one batch of prompts
    def _process_prompts(
        self,
        coords: Tensor,
        labels: Tensor,
        points: Tensor,
        similarity: tuple[Tensor, Tensor] | None,
        crop_box: list[int],
        orig_size: tuple[int, ...],
    ) -> MaskData:
        """Decode a batch of prompts; filter at low resolution; upscale, box and RLE-encode the rest.

        ``coords`` ``B x N x 2`` (input frame) and ``labels`` ``B x N`` are the prompts, ``points`` ``B x 2``
        their clicks in the crop frame; ``similarity`` is ``(h x w map, h x w valid cells)`` or ``None``.
        """
        device = self.predictor.device
        output = self.predictor.decode(coords.to(device), labels.to(device), multimask_output=True)
        low, iou = output.low_res_logits, output.iou_predictions
        if self.mask_weights is not None:
            weights = torch.tensor(self.mask_weights, dtype=low.dtype, device=low.device)
            low, iou = blend_outputs(low, weights), blend_outputs(iou, weights)
        elif self.best_mask_only:
            best = iou.argmax(dim=1, keepdim=True)
            low = low.gather(1, best[:, :, None, None].expand(-1, -1, *low.shape[-2:]))
            iou = iou.gather(1, best)
        data = MaskData(
            low=low.flatten(0, 1),
            iou_preds=iou.flatten(0, 1),
            points=points.repeat_interleave(low.shape[1], dim=0).to(device),
        )
        threshold = self.predictor.base.mask_threshold
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        data["stability_score"] = calculate_stability_score(
            data["low"], threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["similarity"] = (
            mask_similarity(data["low"] > threshold, *similarity)
            if similarity is not None
            else torch.ones_like(data["iou_preds"])
        )
        data["score"] = data["iou_preds"] * data["similarity"].clamp(min=0)
        data["masks"] = self.predictor.upscale_logits(data["low"][:, None])[:, 0]
        del data["low"]
        data.filter(data["masks"].flatten(1).any(dim=1))  # a mask may vanish at full resolution
        data["boxes"] = batched_mask_to_box(data["masks"])
        orig_h, orig_w = orig_size
        data.filter(~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h]))
        data["rles"] = mask_to_rle_pytorch(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
        del data["masks"]
        return _on_cpu(data)


def _frame_of(predictor: Any) -> Any:
    """What ``SamAutomaticMaskGenerator.__init__`` is given as its model: the predictor's ``Sam``, or for
    another base (SAM 2) an object carrying only its input side. Upstream's constructor uses its model
    for nothing but a ``SamPredictor``, which :class:`AdapterMaskGenerator` replaces with ``predictor``."""
    if isinstance(predictor.model, Sam):
        return predictor.model
    return SimpleNamespace(image_encoder=SimpleNamespace(img_size=predictor.base.image_size))


def mask_similarity(masks: Tensor, similarity: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean prototype similarity inside each low-resolution mask.

    Args:
        masks: ``M x 4h x 4w`` bool masks on the padded input square (the decoder's low-res frame).
        similarity: ``h x w`` cosine similarity map on the same square.
        valid: ``h x w`` bool, the cells covering the image
            (:func:`~samplm.adapter.prototype.valid_cells`); the parts of masks over the padding, cut off
            later, do not count. ``None``: every cell.

    Returns:
        ``M`` weighted means (0 for a mask with nothing on the image).
    """
    factor = masks.shape[-1] // similarity.shape[-1]
    weights = torch.nn.functional.avg_pool2d(masks.float()[:, None], factor)[:, 0]
    if valid is not None:
        weights = weights * valid.to(weights.device)
    total = weights.sum(dim=(1, 2))
    inside = (weights * similarity.to(weights.device)).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp(min=1e-12), torch.zeros_like(total))


def _digest(arrays: list[np.ndarray]) -> str:
    """A short digest of arrays' values (float64 bytes)."""
    digest = hashlib.blake2b(digest_size=8)
    for array in arrays:
        update_digest(digest, np.asarray(array, dtype=np.float64))
    return digest.hexdigest()


def _empty_crop_data() -> MaskData:
    """A :class:`MaskData` with every key a crop produces and no rows (a crop may find nothing)."""
    return MaskData(
        iou_preds=torch.zeros(0),
        points=torch.zeros(0, 2),
        stability_score=torch.zeros(0),
        similarity=torch.zeros(0),
        score=torch.zeros(0),
        boxes=torch.zeros(0, 4, dtype=torch.int),
        rles=[],
    )


def _joined(parts: Iterable[MaskData]) -> MaskData:
    """The rows of ``parts`` in order, in one :class:`MaskData` (columns as :func:`_empty_crop_data`).
    ``MaskData.cat`` deep-copies list columns (the RLEs); these rows are the crop's own, so they are
    joined as they are."""
    data = _empty_crop_data()
    for part in parts:
        for key, value in part.items():
            data[key] = data[key] + value if isinstance(value, list) else torch.cat([data[key], value])
    return data


def _on_cpu(data: MaskData) -> MaskData:
    """Every tensor column moved to the CPU, where a crop's batches are gathered."""
    for key, value in list(data.items()):
        if isinstance(value, Tensor):
            data[key] = value.cpu()
    return data
