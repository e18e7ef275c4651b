"""Objects with a whole and parts: a coloured panel (rectangle, ellipse or polygon) carrying text,
logos and stripes, warped by a random perspective transform and pasted on a background.

The whole's mask includes its parts; each part (a text string, a logo, a stripe) has its own mask.
This is the two-level hierarchy that makes a click ambiguous, as for SAM: "the text" or "the banner".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .drawing import draw_logo, draw_text_fitted, random_color, random_perspective


@dataclass
class SceneObject:
    """Masks of one pasted object (``H x W`` bool, after occlusion by later objects)."""

    whole: np.ndarray
    parts: list[np.ndarray] = field(default_factory=list)


def _plate(canvas: np.ndarray, box: tuple[int, int, int, int], rng: np.random.Generator, color) -> np.ndarray:
    """A solid plate (rectangle or ellipse) filling ``box``, carrying a string or a logo; returns the
    plate's mask (its text or logo included)."""
    x0, y0, x1, y1 = box
    mask = np.zeros(canvas.shape[:2], np.uint8)
    if rng.random() < 0.7:
        cv2.rectangle(mask, (x0, y0), (x1 - 1, y1 - 1), 1, -1)
    else:
        cv2.ellipse(
            mask, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 1, -1
        )
    plate = mask.astype(bool)
    canvas[plate] = color
    dx, dy = (x1 - x0) // 6, (y1 - y0) // 5
    inner = (x0 + dx, y0 + dy, x1 - dx, y1 - dy)
    draw = draw_text_fitted if rng.random() < 0.7 else draw_logo
    draw(canvas, inner, rng, random_color(rng, color, 120))
    return plate


def _panel(
    rng: np.random.Generator, size: int, shape: str, plates: float = 0.0
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Draw a panel centred in a ``size`` square canvas: (image, whole mask, part masks).

    ``plates`` is the probability that the central element is a solid plate carrying the text or logo
    (the part is then the plate) rather than bare text strokes or a logo."""
    canvas = np.zeros((size, size, 3), np.uint8)
    whole = np.zeros((size, size), np.uint8)
    w = int(size * rng.uniform(0.45, 0.8))
    h = int(w * rng.uniform(0.3, 0.75))
    x0, y0 = (size - w) // 2, (size - h) // 2
    fill = random_color(rng)
    kind = shape if shape != "any" else ("rect", "rect", "ellipse", "polygon")[int(rng.integers(4))]
    if kind == "rect":
        cv2.rectangle(whole, (x0, y0), (x0 + w - 1, y0 + h - 1), 1, -1)
    elif kind == "ellipse":
        cv2.ellipse(whole, (size // 2, size // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
    else:
        n = int(rng.integers(5, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = np.stack([size / 2 + w / 2 * np.cos(angles), size / 2 + h / 2 * np.sin(angles)], 1)
        cv2.fillPoly(whole, [pts.round().astype(np.int32)], 1)
    whole = whole.astype(bool)
    canvas[whole] = fill
    if rng.random() < 0.5:  # texture: subtle noise on the panel
        noise = rng.normal(0, rng.uniform(3, 12), canvas.shape)
        canvas[whole] = np.clip(canvas[whole] + noise[whole], 0, 255).astype(np.uint8)
    parts: list[np.ndarray] = []
    # central element: text or logo over most of the panel's centre (where a centre click lands)
    cw, ch = int(w * rng.uniform(0.45, 0.8)), int(h * rng.uniform(0.4, 0.7))
    central = (size // 2 - cw // 2, size // 2 - ch // 2, size // 2 + cw // 2, size // 2 + ch // 2)
    color = random_color(rng, fill, 120)
    if plates and rng.random() < plates:
        parts.append(_plate(canvas, central, rng, color) & whole)
    else:
        draw = draw_text_fitted if rng.random() < 0.55 else draw_logo
        parts.append(draw(canvas, central, rng, color) & whole)
    for _ in range(int(rng.integers(0, 3))):  # smaller extras: stripe band, small logo or small text
        color = random_color(rng, fill, 110)
        if rng.random() < 0.4:
            band = np.zeros((size, size), bool)
            top = y0 + int(h * rng.choice([0.05, 0.82]))
            band[top : top + max(3, h // 10), x0 : x0 + w] = True
            band &= whole & ~np.any(parts, axis=0)
            canvas[band] = color
            part = band
        else:
            bw, bh = int(w * 0.22), int(h * 0.25)
            bx = x0 + int(rng.uniform(0.02, 0.76) * w)
            by = y0 + int(rng.choice([0.04, 0.72]) * h)
            drawer = draw_logo if rng.random() < 0.6 else draw_text_fitted
            part = drawer(canvas, (bx, by, bx + bw, by + bh), rng, color) & whole
            for earlier in parts:
                earlier &= ~part
        if part.sum() >= 12:
            parts.append(part)
    return canvas, whole, [p for p in parts if p.sum() >= 12]


def paste_object(
    image: np.ndarray,
    objects: list[SceneObject],
    rng: np.random.Generator,
    *,
    shape: str = "any",
    scale: tuple[float, float] = (0.5, 1.0),
    warp: float = 0.12,
    plates: float = 0.0,
) -> SceneObject:
    """Draw a new object, warp it, paste it on ``image`` (in place) and occlude earlier objects.

    Args:
        image: ``S x S x 3`` canvas.
        objects: objects already in the scene; their masks lose what the new one covers.
        shape: ``"rect"``, ``"ellipse"``, ``"polygon"`` or ``"any"``.
        scale: range of the object's size relative to the canvas.
        warp: strength of the perspective jitter (fraction of the side).
        plates: probability that the central part is a solid plate carrying text or a logo.
    """
    size = image.shape[0]
    layer, whole, parts = _panel(rng, size, shape, plates)
    s = rng.uniform(*scale)
    angle = rng.uniform(-25, 25)
    affine = cv2.getRotationMatrix2D((size / 2, size / 2), angle, s)
    affine[:, 2] += rng.uniform(-0.3, 0.3, 2) * size
    homography = random_perspective(rng, size, warp) @ np.vstack([affine, [0, 0, 1]])

    def warp_mask(mask: np.ndarray) -> np.ndarray:
        return (
            cv2.warpPerspective(mask.astype(np.uint8), homography, (size, size), flags=cv2.INTER_NEAREST) > 0
        )

    warped = cv2.warpPerspective(layer, homography, (size, size), flags=cv2.INTER_LINEAR)
    new = SceneObject(warp_mask(whole), [warp_mask(p) for p in parts])
    image[new.whole] = warped[new.whole]
    for old in objects:
        old.whole &= ~new.whole
        old.parts = [p & ~new.whole for p in old.parts]
    new.parts = [p for p in new.parts if p.sum() >= 12]
    return new
