"""``Instance``: the one record every reader produces and training, evaluation and the demo consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import DataError
from ..utils.geometry import box_to_mask, polygons_to_mask, rle_decode
from .images import read_mask_file


class MaskShape(Protocol):
    """Anything that can draw an instance's mask at a given image size."""

    def rasterize(self, height: int, width: int) -> np.ndarray:  # H x W bool
        ...


@dataclass(frozen=True)
class PolygonShape:
    """Union of polygons, each ``K x 2`` XY pixels (COCO ``segmentation`` lists)."""

    polygons: tuple[np.ndarray, ...]

    def rasterize(self, height: int, width: int) -> np.ndarray:
        return polygons_to_mask(self.polygons, height, width)


@dataclass(frozen=True)
class RLEShape:
    """COCO run-length encoding (``{"size": [H, W], "counts": ...}``)."""

    rle: dict

    def rasterize(self, height: int, width: int) -> np.ndarray:
        return rle_decode(self.rle, height, width)


@dataclass(frozen=True)
class BoxShape:
    """A rectangle mask from an XYXY box (for box-only datasets such as VOC detection sets)."""

    box: tuple[float, float, float, float]

    def rasterize(self, height: int, width: int) -> np.ndarray:
        return box_to_mask(self.box, height, width)


@dataclass(frozen=True)
class MaskFileShape:
    """A mask image on disk: non-zero pixels, or pixels equal to ``value`` in a label map.

    ``resize=True`` resizes it to the image (nearest neighbour); otherwise a size mismatch is an error.
    """

    path: Path
    value: int | None = None
    resize: bool = False

    def rasterize(self, height: int, width: int) -> np.ndarray:
        mask = read_mask_file(self.path, self.value, size=(height, width) if self.resize else None)
        if mask.shape != (height, width):
            raise DataError(
                self.path, f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is {height}x{width}"
            )
        return mask


@dataclass(frozen=True)
class Instance:
    """One annotated object.

    Attributes:
        image_path: the image file.
        category: class / part name (``"licence"``, ``"nose"``).
        shape: how to draw its mask (polygon, RLE, box or mask file).
        instance_id: unique, stable id (used in reports and for deterministic ordering).
        image_size: ``(H, W)`` declared by the annotation file, if any.
        box: XYXY pixels if the annotation gives one (COCO boxes are converted from XYWH).
    """

    image_path: Path
    category: str
    shape: MaskShape
    instance_id: str
    image_size: tuple[int, int] | None = None
    box: tuple[float, float, float, float] | None = field(default=None)

    def mask(self, height: int, width: int) -> np.ndarray:
        """The instance mask at image size ``H x W`` (bool).

        Raises:
            DataError: ``H x W`` is not the declared :attr:`image_size` (the mask would be drawn at the
                wrong scale).
        """
        if self.image_size is not None and (height, width) != tuple(self.image_size):
            declared = f"{self.image_size[0]}x{self.image_size[1]}"
            raise DataError(
                self.image_path,
                f"annotation {self.instance_id} was made for a {declared} image but the image is "
                f"{height}x{width}; fix the declared size in the annotation file",
            )
        return self.shape.rasterize(height, width)
