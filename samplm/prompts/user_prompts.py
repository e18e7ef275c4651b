"""Validation of predictor inputs (images and prompts), with errors that say what was expected.

Conventions: points are XY pixels, boxes XYXY pixels. ``predict`` takes them in the original image
frame (``H x W`` of the image given to ``set_image``) as numpy arrays or nested lists; ``predict_torch``
takes torch tensors in SAM's resized input frame (after ``ResizeLongestSide``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import ImageError, PromptError

VALID_POINT_LABELS = (-1, 0, 1)
EXPECTED_IMAGE = "an H x W x 3 uint8 RGB array (or H x W grayscale, H x W x 4 RGBA, floats in 0..1)"


def as_rgb_uint8(image: Any) -> np.ndarray:
    """The ``H x W x 3`` uint8 image ``SamPredictor.set_image`` expects, from what users commonly pass.

    ``H x W x 3`` uint8 is returned as is (not copied); ``H x W`` and ``H x W x 1`` grayscale are
    replicated to three channels; ``H x W x 4`` loses its alpha channel; float images with values in
    ``[0, 1]`` are scaled by 255 and rounded. The channel order is left alone (``image_format`` names it).

    Raises:
        ImageError: any other layout (e.g. channels first) or dtype (uint16, int64, bool, float images
            with values above 1), an empty image, or NaN / infinite values.
    """
    try:
        array = np.asarray(image)
    except (TypeError, ValueError) as exc:  # ragged nested lists, objects numpy cannot read
        raise ImageError(f"image cannot be read as an array ({exc}); expected {EXPECTED_IMAGE}") from exc
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4)):
        array = array[..., None] if array.ndim == 2 else array
        if 0 in array.shape:
            raise ImageError(f"the image is empty (shape {array.shape}); expected {EXPECTED_IMAGE}")
        array = array[..., :3] if array.shape[-1] == 4 else array
        array = np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array
        return _as_uint8(array)
    hint = ""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4):
        hint = " (channels first?); pass image.transpose(1, 2, 0)"
    raise ImageError(f"image has shape {array.shape}{hint}; expected {EXPECTED_IMAGE}")


def _as_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 unchanged; floats in [0, 1] scaled and rounded; anything else an :class:`ImageError`."""
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ImageError(
            f"image dtype {array.dtype} is not supported; expected {EXPECTED_IMAGE}: convert it, e.g. "
            "(image / image.max() * 255).astype(np.uint8) or image.astype(np.float32) / image.max()"
        )
    if not np.isfinite(array).all():
        raise ImageError("the float image contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        raise ImageError(
            f"the float image has values in [{low:g}, {high:g}]; SAM needs uint8 (0..255) or floats in "
            "0..1: pass image.astype(np.uint8) if it holds 0..255, or scale it to 0..1 (image / 255)"
        )
    return np.rint(array.astype(np.float64) * 255).astype(np.uint8)


def check_numpy_prompts(
    point_coords: Any,
    point_labels: Any,
    box: Any,
    mask_input: Any,
    *,
    image_size: tuple[int, int],
    mask_size: tuple[int, int],
) -> tuple[np.ndarray | None, ...]:
    """Validate the arguments of ``SamPredictor.predict`` (numpy arrays or nested lists).

    Args:
        point_coords: ``N x 2`` XY pixels in the original image, or ``None``.
        point_labels: ``N`` labels in {1, 0, -1}, or ``None``.
        box: ``4`` or ``1 x 4`` XYXY pixels, or ``None``.
        mask_input: ``1 x mask_size`` low-resolution logits, or ``None``.
        image_size: ``(H, W)`` of the original image.
        mask_size: ``(4h, 4w)`` expected for ``mask_input`` (SAM: ``(256, 256)``).

    Returns:
        ``(point_coords, point_labels, box, mask_input)`` as numpy arrays (float64 coordinates, boxes
        and masks, as ``SamPredictor`` converts them), ``None`` where not given.

    Raises:
        PromptError: on any problem.
    """
    coords = labels = boxes = mask = None
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
        labels = _not_complex(np.asarray(point_labels), "point_labels")
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
    return coords, labels, boxes, mask


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
    require_tensors(point_coords=point_coords, point_labels=point_labels, boxes=boxes, mask_input=mask_input)
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
        _check_torch_mask(mask_input, mask_size)
        batch["mask_input"] = mask_input.shape[0]
    if len(set(batch.values())) > 1:
        raise PromptError(f"prompt batch sizes disagree: {batch}")


def _check_torch_mask(mask_input: torch.Tensor, mask_size: tuple[int, int]) -> None:
    """``B x 1 x mask_size`` finite low-res logits."""
    if mask_input.dim() != 4 or tuple(mask_input.shape[1:]) != (1, *mask_size):
        raise PromptError(
            f"mask_input must be B x 1 x {mask_size[0]} x {mask_size[1]}, got {tuple(mask_input.shape)}"
        )
    if not torch.isfinite(mask_input).all():
        raise PromptError("mask_input contains NaN or infinite values")


def require_tensors(**prompts: Any) -> None:
    """Raise :class:`PromptError` unless every non-``None`` prompt is a torch tensor (``predict_torch``
    and ``decode`` take tensors only); the message says where numpy prompts go."""
    for name, value in prompts.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise PromptError(
                f"{name} must be a torch tensor, got {type(value).__name__}: predict_torch and decode take "
                "torch tensors in the resized input frame; use predict(...) for numpy arrays or lists in "
                "the original image frame"
            )
        if value is not None and value.is_complex():
            raise PromptError(f"{name} must be real, got a complex tensor ({value.dtype})")


def _as_float_array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value)
        array = array if np.iscomplexobj(array) else array.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{name} must be numeric, got {type(value).__name__}") from exc
    _not_complex(array, name)
    if not np.isfinite(array).all():
        raise PromptError(f"{name} contains NaN or infinite values")
    return array


def _not_complex(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` unchanged; :class:`PromptError` if it holds complex numbers (casting would drop their
    imaginary parts silently)."""
    if np.iscomplexobj(array):
        raise PromptError(f"{name} must be real numbers, got complex values ({array.dtype})")
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
