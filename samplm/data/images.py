"""Reading images as ``H x W x 3`` uint8 RGB, whatever their file mode, with EXIF orientation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_UNREADABLE = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap height and width
#: Default pixel limit of ``samplm segment`` (``--max-pixels``): 80 megapixels, about 3 GB resident while
#: segmented; larger images are skipped, read from the header before any pixel is decoded.
DEFAULT_MAX_PIXELS = 80_000_000


def is_file(path: str | os.PathLike[str]) -> bool:
    """``Path.is_file``, but ``False`` for names the OS refuses (too long, undecodable) instead of raising."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def image_file_size(path: str | os.PathLike[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(H, W)`` as stored and as displayed (after EXIF orientation), from the header only.

    Raises:
        DataError: missing or unreadable image.
    """
    try:
        with Image.open(path) as image:
            stored = (image.height, image.width)
            # the base method reads the EXIF already parsed from the header; PNG's own would decode pixels
            orientation = Image.Image.getexif(image).get(0x0112, 1)
    except FileNotFoundError as exc:
        raise DataError(path, "image file does not exist") from exc
    except _UNREADABLE as exc:
        raise DataError(path, f"cannot be read as an image ({exc})") from exc
    return stored, (stored[::-1] if orientation in _TRANSPOSED else stored)


def size_mismatch(
    declared: tuple[int, int], stored: tuple[int, int], displayed: tuple[int, int]
) -> str | None:
    """Why a declared ``(H, W)`` does not fit an image (``None`` when it fits either orientation)."""
    if tuple(declared) in (tuple(stored), tuple(displayed)):
        return None
    return (
        f"the annotation declares {declared[0]}x{declared[1]} but the file is "
        f"{displayed[0]}x{displayed[1]}; fix the declared size or annotate the image as it is"
    )


def check_image_file(
    path: Path, declared: tuple[int, int] | None = None
) -> tuple[tuple[int, int], None] | tuple[None, tuple[str, str]]:
    """``(displayed (H, W), None)`` for a usable image, else ``(None, (reason, what to do))``.

    Checks that the file exists, that its header can be read and, when the annotation file declares
    the size, that the size fits the file (either EXIF orientation), reading no pixels.
    """
    if not is_file(path):
        return None, ("image file missing", "check the images folder (--images) and the file name")
    try:
        stored, displayed = image_file_size(path)
    except DataError as exc:
        return None, ("unreadable image file", f"{exc.problem}; replace the file or remove its annotations")
    problem = size_mismatch(declared, stored, displayed) if declared is not None else None
    if problem is not None:
        return None, ("declared image size differs from the image file", problem)
    return displayed, None


def find_images(*folders: str | os.PathLike[str]) -> list[Path]:
    """Image files (by suffix) anywhere below the given folders, sorted."""
    return sorted(
        p
        for folder in folders
        for p in Path(folder).rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def load_image(
    path: str | os.PathLike[str],
    expected_size: tuple[int, int] | None = None,
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Load an image as ``H x W x 3`` RGB uint8.

    EXIF orientation is applied, unless ``expected_size`` (``(H, W)`` from the annotation file) matches
    the stored orientation but not the rotated one (annotations made on the raw pixels). Grayscale,
    palette, RGBA (alpha dropped), CMYK, 1-bit, 16-bit and float images are converted; 16-bit and float
    images are scaled by their maximum value.

    Args:
        path: the image file.
        expected_size: ``(H, W)`` declared by an annotation file, if any.
        max_pixels: refuse images of more than this many pixels (``H x W`` from the header, before any
            pixel is decoded); ``None``: only Pillow's own decompression-bomb limit applies.

    Raises:
        DataError: missing, unreadable, empty or too large image, or ``expected_size`` fits neither
            orientation (its annotations would be drawn at the wrong scale).
    """
    problem = None
    try:
        with Image.open(path) as raw:
            _check_pixels(path, raw, max_pixels)
            raw.load()
            image = ImageOps.exif_transpose(raw)
            if expected_size is not None:
                rotated, stored = (image.height, image.width), (raw.height, raw.width)
                problem = size_mismatch(expected_size, stored, rotated)
                if rotated != tuple(expected_size):
                    image = raw
            array = _to_rgb_uint8(image)
    except DataError:  # (a ValueError, which _UNREADABLE would wrap again)
        raise
    except FileNotFoundError as exc:
        raise DataError(path, "image file does not exist") from exc
    except _UNREADABLE as exc:
        raise DataError(path, f"cannot be read as an image ({exc})") from exc
    if problem is not None:
        raise DataError(path, problem)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(path, "image is empty")
    return array


def _check_pixels(path: str | os.PathLike[str], image: Image.Image, max_pixels: int | None) -> None:
    """Raise :class:`DataError` if the opened (not yet decoded) ``image`` has more than ``max_pixels``."""
    if max_pixels is not None and image.width * image.height > max_pixels:
        raise DataError(
            path,
            f"image is {image.width} x {image.height} = {image.width * image.height / 1e6:.1f} megapixels, "
            f"above the limit of {max_pixels / 1e6:g} (--max-pixels); downscale it, or raise --max-pixels",
        )


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
    labels = read_mask_labels(path)
    mask = labels != 0 if value is None else labels == value
    if size is not None and mask.shape != tuple(size):
        resized = Image.fromarray(mask.astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST)
        mask = np.asarray(resized).astype(bool)
    return mask


def read_mask_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``H x W`` label values of a mask image: palette indices for palette images, the gray level
    of colour images, the first channel of gray + alpha images.

    Raises:
        DataError: missing or unreadable mask file.
    """
    try:
        with Image.open(path) as mask_image:
            if mask_image.mode in ("RGB", "RGBA", "CMYK", "YCbCr"):
                mask_image = mask_image.convert("L")
            labels = np.asarray(mask_image)
    except FileNotFoundError as exc:
        raise DataError(path, "mask file does not exist") from exc
    except _UNREADABLE as exc:
        raise DataError(path, f"cannot be read as a mask image ({exc})") from exc
    return labels[..., 0] if labels.ndim == 3 else labels
