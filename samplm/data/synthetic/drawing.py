"""Procedural drawing shared by the synthetic datasets: backgrounds, shapes, text, warps.

Everything takes a ``numpy.random.Generator`` so scenes are reproducible from a seed. Images are
``H x W x 3`` uint8 RGB, masks ``H x W`` bool.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
)


def random_color(rng: np.random.Generator, avoid: Sequence[int] | None = None, min_distance: float = 90.0):
    """A random RGB colour at least ``min_distance`` away from ``avoid``."""
    for _ in range(50):
        color = rng.integers(0, 256, 3)
        if avoid is None or np.linalg.norm(color - np.asarray(avoid)) >= min_distance:
            break
    return tuple(int(c) for c in color)


def procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient + blurred noise + random unannotated clutter."""
    c0, c1 = np.array(random_color(rng)), np.array(random_color(rng))
    t = (
        np.linspace(0, 1, size)[None, :, None]
        if rng.random() < 0.5
        else np.linspace(0, 1, size)[:, None, None]
    )
    image = (c0 * (1 - t) + c1 * t) * np.ones((size, size, 1))
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)), (0, 0), float(rng.uniform(1, 8)))
    image = image + noise / (noise.std() + 1e-6) * rng.uniform(5, 40)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 8))):
        center = tuple(int(v) for v in rng.integers(0, size, 2))
        color = random_color(rng)
        if rng.random() < 0.5:
            cv2.circle(image, center, int(rng.integers(3, size // 8)), color, -1)
        else:
            cv2.line(
                image, center, tuple(int(v) for v in rng.integers(0, size, 2)), color, int(rng.integers(1, 6))
            )
    return image


class PhotoBackgrounds:
    """Random square crops of real photos (any folder of images), resized to ``size``."""

    def __init__(self, paths: Sequence[str | Path], size: int, limit: int = 400) -> None:
        from ..images import load_image

        self.size = size
        self.photos = []
        for path in list(paths)[:limit]:
            image = load_image(path)
            scale = 2 * size / min(image.shape[:2])
            if scale < 1:
                image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            self.photos.append(image)

    def __len__(self) -> int:
        return len(self.photos)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        photo = self.photos[int(rng.integers(len(self.photos)))]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = cv2.resize(
            photo[y : y + side, x : x + side], (self.size, self.size), interpolation=cv2.INTER_AREA
        )
        return crop[:, ::-1].copy() if rng.random() < 0.5 else crop


def random_text(rng: np.random.Generator, low: int = 2, high: int = 7) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(rng.choice(list(alphabet), int(rng.integers(low, high + 1))))


def draw_text_fitted(
    canvas: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator, color
) -> np.ndarray:
    """Draw a random string as large as fits in ``box`` (x0, y0, x1, y1); returns its stroke mask."""
    x0, y0, x1, y1 = box
    text, font = random_text(rng), FONTS[int(rng.integers(len(FONTS)))]
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = max(0.3, min((x1 - x0) / max(tw, 1), (y1 - y0) / max(th, 1)) * rng.uniform(0.7, 0.95))
    thickness = max(2, round(scale * rng.uniform(2.0, 3.5)))
    (tw, th), _base = cv2.getTextSize(text, font, scale, thickness)
    ox = int(x0 + max(0, (x1 - x0 - tw) // 2))
    oy = int(y0 + max(th, (y1 - y0 + th) // 2))
    mask = np.zeros(canvas.shape[:2], np.uint8)
    cv2.putText(mask, text, (ox, oy), font, scale, 1, thickness, cv2.LINE_AA)
    mask = mask.astype(bool)
    canvas[mask] = color
    return mask


def draw_logo(
    canvas: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator, color
) -> np.ndarray:
    """A filled circle, ellipse, star or polygon inside ``box``; returns its mask."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    rx, ry = max(2.0, (x1 - x0) / 2), max(2.0, (y1 - y0) / 2)
    mask = np.zeros(canvas.shape[:2], np.uint8)
    kind = int(rng.integers(4))
    if kind == 0:
        cv2.circle(mask, (int(cx), int(cy)), int(min(rx, ry)), 1, -1)
    elif kind == 1:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(rx), int(ry)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        n = int(rng.integers(3, 8)) * (2 if kind == 2 else 1)
        angles = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)
        radius = np.where(np.arange(n) % 2 == 1, 0.45, 1.0) if kind == 2 else np.ones(n)
        pts = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], 1)
        cv2.fillPoly(mask, [pts.round().astype(np.int32)], 1)
    mask = mask.astype(bool)
    canvas[mask] = color
    return mask


def random_perspective(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """A 3x3 homography: random affine (rotation, scale, shear) plus perspective corner jitter."""
    src = np.float32([[0, 0], [size, 0], [size, size], [0, size]])
    jitter = rng.uniform(-strength, strength, (4, 2)) * size
    dst = (src + jitter).astype(np.float32)
    return cv2.getPerspectiveTransform(src, dst)
