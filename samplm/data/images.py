"""Reading images as ``H x W x 3`` uint8 RGB, whatever their file mode, with EXIF orientation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def find_images(*folders: str | os.PathLike[str]) -> list[Path]:
    """Image files (by suffix) anywhere below the given folders, sorted."""
    return sorted(
        p
        for folder in folders
        for p in Path(folder).rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def load_image(path: str | os.PathLike[str], expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Load an image as RGB uint8.

    EXIF orientation is applied, unless ``expected_size`` (``(H, W)`` from the annotation file) matches
    the stored orientation but not the rotated one (annotations made on the raw pixels). Grayscale,
    palette, RGBA (alpha dropped), CMYK, 1-bit, 16-bit and float images are converted; 16-bit and float
    images are scaled by their maximum value.

    Raises:
        DataError: missing, unreadable or empty image.
    """
    try:
        with Image.open(path) as raw:
            raw.load()
            image = ImageOps.exif_transpose(raw)
            if expected_size is not None:
                rotated = (image.height, image.width)
                stored = (raw.height, raw.width)
                if rotated != tuple(expected_size) and stored == tuple(expected_size):
                    image = raw
            array = _to_rgb_uint8(image)
    except FileNotFoundError as exc:
        raise DataError(path, "image file does not exist") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(path, f"cannot be read as an image ({exc})") from exc
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(path, "image is empty")
    return array


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        gray = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def read_mask_file(
    path: str | os.PathLike[str], value: int | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Read a mask image as ``H x W`` bool: pixels equal to ``value``, or all non-zero pixels.

    Args:
        path: PNG (or any format PIL reads); palette images are read by index, not colour.
        value: label to select in a label map; ``None`` selects every non-zero pixel.
        size: ``(H, W)`` to resize to (nearest neighbour), e.g. CelebAMask-HQ's 512 px masks for
            1024 px images; ``None`` keeps the file's size.
    """
    try:
        with Image.open(path) as mask_image:
            if mask_image.mode in ("RGB", "RGBA"):
                labels = np.asarray(mask_image.convert("L"))
            else:
                labels = np.asarray(mask_image)
    except FileNotFoundError as exc:
        raise DataError(path, "mask file does not exist") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(path, f"cannot be read as a mask image ({exc})") from exc
    if labels.ndim == 3:
        labels = labels[..., 0]
    mask = labels != 0 if value is None else labels == value
    if size is not None and mask.shape != tuple(size):
        resized = Image.fromarray(mask.astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST)
        mask = np.asarray(resized).astype(bool)
    return mask
