"""PMM polygon refinement at inference (paper Fig. 5).

mask -> outer contour -> K points at equal arc length -> features sampled from the decoder's
two-way-transformer image tokens -> PMM offsets -> refined polygon -> rasterised mask.

Frames: masks and polygons are in the original image (XY pixels, pixel centres at ``+0.5``); the PMM
works in SAM's resized input frame, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .errors import SamplmError
from .geometry import mask_to_polygon, polygons_to_mask
from .modeling import PointMatchingModule, sample_point_features


@dataclass(frozen=True)
class RefinedMask:
    """One refined mask.

    Attributes:
        mask: ``H x W`` bool, the refined polygon rasterised.
        polygon: ``K x 2`` XY refined points (original frame); empty for an empty input mask.
        initial_polygon: ``K x 2`` XY points sampled on the input mask's contour.
    """

    mask: np.ndarray
    polygon: np.ndarray
    initial_polygon: np.ndarray


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
    image_tokens: Tensor,
    *,
    original_size: tuple[int, int],
    input_size: tuple[int, int],
    image_size: int,
    grid: tuple[int, int],
) -> list[RefinedMask]:
    """Refine masks of one prompt with the PMM.

    Args:
        pmm: the adapter's Point Matching Module.
        masks: ``C x H x W`` bool masks in the original frame (one prompt's candidates).
        image_tokens: ``1 x (h*w) x 256`` two-way-transformer image tokens of that prompt's decoder pass.
        original_size: ``(H, W)`` of the image.
        input_size: ``(H', W')`` after ``ResizeLongestSide``.
        image_size: side of SAM's padded input (1024 for SAM).
        grid: ``(h, w)`` of the image embedding.

    Returns:
        One :class:`RefinedMask` per input mask.
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3 or masks.shape[1:] != tuple(original_size):
        raise ValueError(f"masks must be C x {original_size[0]} x {original_size[1]}, got {masks.shape}")
    scale = np.array([input_size[1] / original_size[1], input_size[0] / original_size[0]])
    tokens = image_tokens[:1].float()
    feature_map = tokens.transpose(1, 2).reshape(1, tokens.shape[-1], *grid)
    device = next(pmm.parameters()).device
    results = []
    for mask in masks:
        if not mask.any():
            empty = np.zeros((0, 2))
            results.append(RefinedMask(mask.copy(), empty, empty))
            continue
        initial = mask_to_polygon(mask, pmm.num_points)
        points = torch.as_tensor(initial * scale, dtype=torch.float32, device=device)[None]
        features = sample_point_features(feature_map.to(device), points, image_size)
        refined_input = points + pmm(features.to(next(pmm.parameters()).dtype)).float()
        refined = (refined_input[0].cpu().numpy()) / scale
        refined[:, 0] = refined[:, 0].clip(0, original_size[1])
        refined[:, 1] = refined[:, 1].clip(0, original_size[0])
        results.append(RefinedMask(polygons_to_mask([refined], *original_size), refined, initial))
    return results
