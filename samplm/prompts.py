"""Validation of predictor prompts, with errors that say what was expected.

Conventions: points are XY pixels, boxes XYXY pixels. ``predict`` takes them in the original image
frame (``H x W`` of the image given to ``set_image``); ``predict_torch`` takes them in SAM's resized
input frame (after ``ResizeLongestSide``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import PromptError

VALID_POINT_LABELS = (-1, 0, 1)


def check_numpy_prompts(
    point_coords: Any,
    point_labels: Any,
    box: Any,
    mask_input: Any,
    *,
    image_size: tuple[int, int],
    mask_size: tuple[int, int],
) -> None:
    """Validate the arguments of ``SamPredictor.predict``.

    Args:
        point_coords: ``N x 2`` XY pixels in the original image, or ``None``.
        point_labels: ``N`` labels in {1, 0, -1}, or ``None``.
        box: ``4`` or ``1 x 4`` XYXY pixels, or ``None``.
        mask_input: ``1 x mask_size`` low-resolution logits, or ``None``.
        image_size: ``(H, W)`` of the original image.
        mask_size: ``(4h, 4w)`` expected for ``mask_input`` (SAM: ``(256, 256)``).

    Raises:
        PromptError: on any problem.
    """
    if point_coords is None and point_labels is not None:
        raise PromptError("point_labels were given without point_coords")
    if point_coords is not None:
        if point_labels is None:
            raise PromptError("point_coords were given without point_labels (1 = foreground, 0 = background)")
        coords = _as_float_array(point_coords, "point_coords")
        if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
            raise PromptError(
                f"point_coords must be N x 2 (X, Y pixels) with N >= 1, got shape {coords.shape}"
            )
        labels = np.asarray(point_labels)
        if labels.ndim != 1 or labels.shape[0] != coords.shape[0]:
            raise PromptError(
                f"point_labels must have shape ({coords.shape[0]},) to match point_coords, got {labels.shape}"
            )
        _check_labels(labels)
        _check_inside(coords, image_size, "point_coords", "the image")
    if box is not None:
        boxes = _as_float_array(box, "box")
        if boxes.shape not in ((4,), (1, 4)):
            raise PromptError(f"box must have shape (4,) or (1, 4) as XYXY pixels, got {boxes.shape}")
        _check_boxes(boxes.reshape(1, 4), image_size, "box", "the image")
    if mask_input is not None:
        mask = _as_float_array(mask_input, "mask_input")
        if mask.shape != (1, *mask_size):
            raise PromptError(
                f"mask_input must have shape (1, {mask_size[0]}, {mask_size[1]}) (low-res logits from a "
                f"previous predict), got {mask.shape}"
            )


def check_torch_prompts(
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_input: torch.Tensor | None,
    *,
    input_size: tuple[int, int],
    mask_size: tuple[int, int],
) -> None:
    """Validate the arguments of ``SamPredictor.predict_torch`` (batched, resized input frame).

    Args:
        point_coords: ``B x N x 2`` XY pixels in the resized frame, or ``None``.
        point_labels: ``B x N``, or ``None``.
        boxes: ``B x 4`` (or ``B x 1 x 4``) XYXY pixels in the resized frame, or ``None``.
        mask_input: ``B x 1 x mask_size``, or ``None``.
        input_size: ``(H, W)`` of the resized image (``predictor.input_size``).
        mask_size: ``(4h, 4w)``.

    Raises:
        PromptError: on any problem, including batch sizes that disagree.
    """
    batch: dict[str, int] = {}
    if point_coords is None and point_labels is not None:
        raise PromptError("point_labels were given without point_coords")
    if point_coords is not None:
        if point_labels is None:
            raise PromptError("point_coords were given without point_labels")
        if point_coords.dim() != 3 or point_coords.shape[-1] != 2 or point_coords.shape[1] == 0:
            raise PromptError(f"point_coords must be B x N x 2, got {tuple(point_coords.shape)}")
        if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
            raise PromptError(
                f"point_labels must be B x N = {tuple(point_coords.shape[:2])}, "
                f"got {tuple(point_labels.shape)}"
            )
        _check_labels(point_labels.detach().cpu().numpy())
        _check_inside(
            point_coords.detach().float().cpu().numpy().reshape(-1, 2),
            input_size,
            "point_coords",
            "the resized input frame",
        )
        batch["point_coords"] = point_coords.shape[0]
    if boxes is not None:
        if boxes.dim() not in (2, 3) or boxes.shape[-1] != 4 or (boxes.dim() == 3 and boxes.shape[1] != 1):
            raise PromptError(f"boxes must be B x 4 (XYXY), got {tuple(boxes.shape)}")
        _check_boxes(
            boxes.detach().float().cpu().numpy().reshape(-1, 4),
            input_size,
            "boxes",
            "the resized input frame",
        )
        batch["boxes"] = boxes.shape[0]
    if mask_input is not None:
        if mask_input.dim() != 4 or tuple(mask_input.shape[1:]) != (1, *mask_size):
            raise PromptError(
                f"mask_input must be B x 1 x {mask_size[0]} x {mask_size[1]}, got {tuple(mask_input.shape)}"
            )
        batch["mask_input"] = mask_input.shape[0]
    if len(set(batch.values())) > 1:
        raise PromptError(f"prompt batch sizes disagree: {batch}")


def _as_float_array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{name} must be numeric, got {type(value).__name__}") from exc
    if not np.isfinite(array).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    return array


def _check_labels(labels: np.ndarray) -> None:
    bad = sorted(set(np.unique(labels).tolist()) - set(VALID_POINT_LABELS))
    if bad:
        raise PromptError(f"point labels must be 1 (foreground), 0 (background) or -1 (ignored); got {bad}")


def _check_inside(coords: np.ndarray, size: tuple[int, int], name: str, frame: str) -> None:
    if not np.isfinite(coords).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    height, width = size
    outside = (coords[:, 0] < 0) | (coords[:, 0] > width) | (coords[:, 1] < 0) | (coords[:, 1] > height)
    if outside.any():
        first = coords[outside][0].tolist()
        raise PromptError(
            f"{int(outside.sum())} point(s) of {name} lie outside {frame} (W={width}, H={height}), "
            f"e.g. (x, y) = ({first[0]:g}, {first[1]:g})"
        )


def _check_boxes(boxes: np.ndarray, size: tuple[int, int], name: str, frame: str) -> None:
    if not np.isfinite(boxes).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise PromptError(f"{name} must be XYXY with x1 <= x2 and y1 <= y2, got {boxes.tolist()}")
    _check_inside(boxes.reshape(-1, 2), size, name, frame)
