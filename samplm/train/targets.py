"""Per-instance training targets in SAM's frames.

Frames: the *original* image (``H x W``); SAM's *input* frame after ``ResizeLongestSide`` (longest
side = ``img_size``, e.g. 1024), padded bottom/right to ``img_size x img_size``; and the *low-res*
frame of the decoder's logits (``img_size / 4`` per side, 256 for SAM), in which training losses are
computed. One low-res pixel covers ``scale = img_size / low_res`` input pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..utils.geometry import mask_to_polygon


@dataclass(frozen=True)
class InstanceTarget:
    """Ground truth of one instance, precomputed once.

    Attributes:
        low_res: ``L x L`` bool mask in the padded low-res frame (``L`` = 4 x embedding side).
        contour: ``K x 2`` XY contour points in the input frame (for the PMM), or ``None``.
        box: XYXY box in the input frame.
    """

    low_res: np.ndarray
    contour: np.ndarray | None
    box: tuple[float, float, float, float]


def to_padded_grid(mask: np.ndarray, input_size: tuple[int, int], img_size: int, side: int) -> np.ndarray:
    """Original-frame bool mask -> ``side x side`` float coverage (0..1) of the padded input square.

    The mask is resized to the input frame, padded bottom/right to ``img_size``, and area-averaged to
    ``side`` (the low-res frame, or the embedding grid: then each value is the share of a cell covered).
    """
    resized = cv2.resize(
        mask.astype(np.float32), (input_size[1], input_size[0]), interpolation=cv2.INTER_LINEAR
    )
    padded = np.zeros((img_size, img_size), np.float32)
    padded[: input_size[0], : input_size[1]] = resized
    return cv2.resize(padded, (side, side), interpolation=cv2.INTER_AREA)


def to_low_res(mask: np.ndarray, input_size: tuple[int, int], img_size: int, low_res: int) -> np.ndarray:
    """Original-frame bool mask -> padded low-res bool mask (area-averaged, threshold 0.5)."""
    return to_padded_grid(mask, input_size, img_size, low_res) >= 0.5


def make_target(
    mask: np.ndarray,
    input_size: tuple[int, int],
    img_size: int,
    low_res: int,
    num_points: int | None,
) -> InstanceTarget | None:
    """Build an :class:`InstanceTarget`; ``None`` if the mask vanishes at the low-res resolution."""
    small = to_low_res(mask, input_size, img_size, low_res)
    if not small.any():
        return None
    scale = img_size / low_res
    ys, xs = np.nonzero(small)
    box = (xs.min() * scale, ys.min() * scale, (xs.max() + 1) * scale, (ys.max() + 1) * scale)
    contour = mask_to_polygon(small, num_points) * scale if num_points else None
    return InstanceTarget(low_res=small, contour=contour, box=tuple(float(v) for v in box))
