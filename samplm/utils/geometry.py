"""Masks, points, boxes and contours.

Conventions: masks are ``H x W`` boolean arrays; points are ``(x, y)`` pixel coordinates (column, row;
pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``); boxes are XYXY pixels; contours and polygons are
``K x 2`` float arrays of ``(x, y)`` in drawing order.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def as_bool_mask(mask: np.ndarray) -> np.ndarray:
    """Validate and convert a 2-D mask to ``bool``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def xywh_to_xyxy(box: Sequence[float]) -> tuple[float, float, float, float]:
    """COCO ``[x, y, width, height]`` -> ``(x1, y1, x2, y2)``."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def mask_to_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight XYXY box of a non-empty mask; ``x2``/``y2`` are exclusive (last pixel + 1)."""
    mask = as_bool_mask(mask)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        raise ValueError("mask is empty")
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def box_to_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Rasterise an XYXY box: pixels whose centres lie inside it."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xs = np.arange(width) + 0.5
    ys = np.arange(height) + 0.5
    return ((ys >= y1) & (ys <= y2))[:, None] & ((xs >= x1) & (xs <= x2))[None, :]


def polygons_to_mask(polygons: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterise the union of polygons (each ``K x 2`` XY) to an ``H x W`` bool mask.

    A pixel is set when its centre ``(x + 0.5, y + 0.5)`` lies inside a polygon (even-odd rule) or on
    its boundary. So a COCO polygon along pixel edges covers exactly the pixels it encloses,
    and a contour through boundary-pixel centres (:func:`outer_contour`) reproduces its mask.
    """
    out = np.zeros((height, width), dtype=bool)
    centres_y = np.arange(height) + 0.5
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(points) >= 3:
            out |= _scanline_fill(points, centres_y, width)
        _mark_centres_on_edges(points, out)
    return out


def _mark_centres_on_edges(points: np.ndarray, out: np.ndarray) -> None:
    """Set pixels whose centre lies on the closed polyline (boundary counts as inside)."""
    height, width = out.shape
    ends = np.roll(points, -1, axis=0)
    for start, stop in zip(points, ends, strict=True):
        length = float(np.hypot(*(stop - start)))
        t = np.linspace(0.0, 1.0, max(2, int(np.ceil(length * 2)) + 1))
        cells = np.unique(np.floor(start + t[:, None] * (stop - start)).astype(int), axis=0)
        centres = cells + 0.5
        direction = stop - start
        if length > 0:
            along = np.clip(((centres - start) @ direction) / length**2, 0.0, 1.0)
            nearest = start + along[:, None] * direction
        else:
            nearest = np.repeat(start[None], len(centres), axis=0)
        on = np.hypot(*(centres - nearest).T) < 1e-6
        cols, rows = cells[on].T
        keep = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        out[rows[keep], cols[keep]] = True


def _scanline_fill(points: np.ndarray, centres_y: np.ndarray, width: int) -> np.ndarray:
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    yc = centres_y[:, None]
    crosses = ((y0 <= yc) & (yc < y1)) | ((y1 <= yc) & (yc < y0))  # H x E, half-open: vertices once
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(crosses, x0 + (yc - y0) / (y1 - y0) * (x1 - x0), np.nan)
    out = np.zeros((len(centres_y), width), dtype=bool)
    for row in np.nonzero(crosses.any(axis=1))[0]:
        hits = np.sort(xs[row][~np.isnan(xs[row])])
        for start, stop in zip(hits[0::2], hits[1::2], strict=False):
            first = max(int(np.ceil(start - 0.5 - 1e-9)), 0)
            last = min(int(np.floor(stop - 0.5 + 1e-9)), width - 1)
            if first <= last:
                out[row, first : last + 1] = True
    return out


RIDGE_TOLERANCE = 1.0  # pixels: how far from the deepest a pixel of the ridge may be


def distance_transform(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each mask pixel to the nearest pixel outside the mask (image border
    counts as outside); 0 outside the mask. ``H x W`` float32."""
    mask = as_bool_mask(mask)
    padded = np.pad(mask, 1).astype(np.uint8)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def center_point(mask: np.ndarray) -> tuple[float, float]:
    """The deterministic evaluation click, as ``(x, y)``: the centre of the mask's ridge.

    The ridge is the mask's deepest pixels: those within :data:`RIDGE_TOLERANCE` pixels of the largest
    distance to the boundary (a disk's centre, a wide rectangle's whole middle line). The click is the
    ridge pixel nearest to the ridge's centroid (ties -> first in row-major order), so a wide rectangle
    such as a plate is clicked at its centre, not at one end of its middle line, and the click is
    always a mask pixel within a pixel of the deepest.
    """
    dist = distance_transform(mask)
    deepest = float(dist.max())
    if deepest <= 0:
        raise ValueError("mask is empty")
    ys, xs = np.nonzero((dist > 0) & (dist >= deepest - RIDGE_TOLERANCE))
    nearest = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return (float(xs[nearest]), float(ys[nearest]))


def sample_points(
    mask: np.ndarray, num: int, rng: np.random.Generator, *, center_power: float = 1.0
) -> np.ndarray:
    """Random foreground pixels, favouring the mask centre.

    Each pixel is drawn with probability proportional to ``distance_transform ** center_power``
    (0: uniform over the mask; larger: closer to the centre).

    Returns:
        ``num x 2`` float array of ``(x, y)``.
    """
    dist = distance_transform(mask).ravel().astype(np.float64)
    inside = np.nonzero(dist > 0)[0]
    if inside.size == 0:
        raise ValueError("mask is empty")
    weights = dist[inside] ** center_power
    flat = rng.choice(inside, size=num, p=weights / weights.sum())
    ys, xs = np.unravel_index(flat, mask.shape)
    return np.stack([xs, ys], axis=1).astype(np.float64)


def outer_contour(mask: np.ndarray) -> np.ndarray:
    """Largest external contour of a mask: ``M x 2`` XY through the centres of its boundary pixels
    (pixel ``(x, y)`` has centre ``(x + 0.5, y + 0.5)``), in OpenCV's tracing order."""
    mask = as_bool_mask(mask)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError("mask is empty")
    largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    return largest.reshape(-1, 2).astype(np.float64) + 0.5


def resample_closed(polyline: np.ndarray, num: int) -> np.ndarray:
    """``num`` points at equal arc length along a closed polyline, starting at its first vertex.

    Args:
        polyline: ``M x 2`` vertices (``M >= 1``), implicitly closed.
        num: number of points K.

    Returns:
        ``K x 2`` float array.
    """
    points = np.asarray(polyline, dtype=np.float64).reshape(-1, 2)
    if len(points) == 1:
        return np.repeat(points, num, axis=0)
    closed = np.vstack([points, points[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    if total <= 0:
        return np.repeat(points[:1], num, axis=0)
    targets = np.arange(num) * (total / num)
    idx = np.clip(np.searchsorted(cum, targets, side="right") - 1, 0, len(seg) - 1)
    frac = np.where(seg[idx] > 0, (targets - cum[idx]) / np.maximum(seg[idx], 1e-12), 0.0)
    return closed[idx] + frac[:, None] * (closed[idx + 1] - closed[idx])


def mask_to_polygon(mask: np.ndarray, num_points: int) -> np.ndarray:
    """Outer contour of a mask resampled to ``num_points`` equally spaced points (``K x 2`` XY)."""
    return resample_closed(outer_contour(mask), num_points)


def rle_encode(mask: np.ndarray) -> dict:
    """COCO's compressed run-length encoding of an ``H x W`` bool mask, through pycocotools
    (``{"size": [H, W], "counts": bytes}``): a whole-image mask in a few hundred bytes."""
    import pycocotools.mask as mask_utils

    return mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))


def rle_decode(rle: dict, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Decode a COCO run-length encoding (``counts`` as a list or a compressed string) to ``H x W`` bool.

    Args:
        rle: ``{"size": [H, W], "counts": ...}``.
        height, width: expected size; a mismatch raises ``ValueError``.
    """
    try:
        h, w = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"RLE must have 'size': [H, W] and 'counts', got {rle!r:.80}") from exc
    if (height is not None and h != height) or (width is not None and w != width):
        raise ValueError(f"RLE size {h}x{w} does not match the image {height}x{width}")
    if isinstance(counts, str | bytes):
        counts = _decode_compressed_counts(counts.decode() if isinstance(counts, bytes) else counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.sum() != h * w or (counts < 0).any():
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h * w}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T.copy()  # COCO RLE is column-major


def _decode_compressed_counts(text: str) -> list[int]:
    """COCO's compressed RLE string (6-bit groups, +48, delta-coded after the third run)."""
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("truncated compressed RLE string")
            char = ord(text[pos]) - 48
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            pos += 1
            shift += 1
            if not more and (char & 0x10):
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts
