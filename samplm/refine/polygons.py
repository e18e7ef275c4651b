"""PMM polygon refinement at inference (paper Fig. 5).

mask -> outer contour -> K points at equal arc length -> features sampled from the decoder's image
features (the two-way transformer's image-side output) -> PMM offsets -> refined polygon -> rasterised mask.

A mask of several parts has each part refined on its own (parts smaller than ``min_part`` of the
mask are kept as they are); holes are not represented by outer contours and are filled.

Frames: masks and polygons are in the original image (XY pixels, pixel centres at ``+0.5``); the PMM
works in SAM's resized input frame, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from ..adapter import PointMatchingModule, sample_point_features
from ..errors import SamplmError
from ..utils.geometry import mask_to_polygon, polygons_to_mask


@dataclass(frozen=True)
class RefinedMask:
    """One refined mask.

    Attributes:
        mask: ``H x W`` bool: the refined polygons rasterised (plus any small parts kept as they were).
        polygons: one ``K x 2`` XY refined polygon per refined part (original frame), largest first.
        initial_polygons: the matching ``K x 2`` points sampled on each part's contour.
    """

    mask: np.ndarray
    polygons: list[np.ndarray]
    initial_polygons: list[np.ndarray]

    @property
    def polygon(self) -> np.ndarray:
        """The largest part's refined polygon (``0 x 2`` for an empty mask)."""
        return self.polygons[0] if self.polygons else np.zeros((0, 2))


def require_pmm(pmm: PointMatchingModule | None, name: str = "this adapter") -> PointMatchingModule:
    """The PMM, or a clear error when the adapter was trained without one."""
    if pmm is None:
        raise SamplmError(
            f"{name} has no Point Matching Module (trained with --no-pmm or PLM-only); refinement needs one"
        )
    return pmm


@torch.no_grad()
def refine_masks(
    pmm: PointMatchingModule,
    masks: np.ndarray,
    image_features: Tensor,
    *,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    image_size: int,
    min_part: float = 0.05,
) -> list[RefinedMask]:
    """Refine masks of one prompt with the PMM.

    Args:
        pmm: the adapter's Point Matching Module.
        masks: ``C x H x W`` bool masks in the original frame (one prompt's candidates).
        image_features: ``1 x 256 x h x w`` decoder image features of that prompt's decoder pass
            (:attr:`samplm.decoder.decode.DecoderOutput.image_features`).
        original_size: ``(H, W)`` of the image.
        input_size: ``(H', W')`` after ``ResizeLongestSide``.
        image_size: side of SAM's padded input (1024 for SAM).
        min_part: parts smaller than this fraction of a mask are kept unrefined.

    Returns:
        One :class:`RefinedMask` per input mask.
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3 or masks.shape[1:] != tuple(original_size):
        raise ValueError(f"masks must be C x {original_size[0]} x {original_size[1]}, got {masks.shape}")
    scale = np.array([input_size[1] / original_size[1], input_size[0] / original_size[0]])
    parameter = next(pmm.parameters())
    feature_map = image_features[:1].to(device=parameter.device, dtype=torch.float32)
    results = []
    for mask in masks:
        refined_mask = np.zeros_like(mask)
        polygons, initials = [], []
        parts = _parts(mask)
        smallest = max(3, min_part * int(mask.sum()))
        for part in parts:
            if part.sum() < smallest:  # small parts are kept as they are
                refined_mask |= part
                continue
            initial = mask_to_polygon(part, pmm.num_points)
            points = torch.as_tensor(initial * scale, dtype=torch.float32, device=parameter.device)[None]
            features = sample_point_features(feature_map, points, image_size)
            refined = (points + pmm(features.to(parameter.dtype)).float())[0].cpu().numpy() / scale
            refined[:, 0] = refined[:, 0].clip(0, original_size[1])
            refined[:, 1] = refined[:, 1].clip(0, original_size[0])
            refined_mask |= polygons_to_mask([refined], *original_size)
            polygons.append(refined)
            initials.append(initial)
        results.append(RefinedMask(refined_mask, polygons, initials))
    return results


def _parts(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected parts of a mask (as OpenCV traces contours), largest first."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return sorted((labels == i for i in range(1, count)), key=lambda p: -int(p.sum()))
