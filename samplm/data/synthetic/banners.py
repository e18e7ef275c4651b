"""The outdoor-banner task (paper Section 5.3): banners (rectangles carrying text, logos and patterns)
pasted onto backgrounds under random affine + perspective transforms, with exact masks.

``write_banner_dataset`` writes the ``masks`` layout (``images/banner/NNNN.png``,
``masks/banner/NNNN.png``, one label value per banner), which ``samplm.data.read_mask_folder`` and
``--format masks`` read. By default every image carries one banner, as in the paper's set (each banner
pasted on a background of its own); ``max_banners`` > 1 adds banners that may occlude each other.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ...utils.progress import progress_bar
from .drawing import PhotoBackgrounds, procedural_background
from .objects import SceneObject, paste_object

CATEGORY = "banner"
PLATES = 0.5
MAX_BANNERS = 1  # as in the paper's set: each banner pasted on a background of its own


def make_banner_image(
    rng: np.random.Generator,
    size: int = 256,
    photos: PhotoBackgrounds | None = None,
    max_banners: int = MAX_BANNERS,
    plates: float = PLATES,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One image with 1..``max_banners`` banners: (image, banner masks).

    ``plates``: probability that a banner's central text or logo sits on a solid plate of its own."""
    image = (
        photos.sample(rng)
        if photos is not None and len(photos) and rng.random() < 0.7
        else procedural_background(rng, size)
    )
    objects: list[SceneObject] = []
    for _ in range(int(rng.integers(1, max_banners + 1))):
        objects.append(
            paste_object(image, objects, rng, shape="rect", scale=(0.55, 1.05), warp=0.15, plates=plates)
        )
    return image, [o.whole for o in objects if o.whole.sum() >= 200]


def write_banner_dataset(
    root: str | os.PathLike[str],
    count: int,
    *,
    seed: int = 0,
    size: int = 256,
    backgrounds: list[str | Path] | None = None,
    progress: bool = True,
    plates: float = PLATES,
    max_banners: int = MAX_BANNERS,
) -> Path:
    """Generate ``count`` banner images with exact masks under ``root`` (deterministic for a seed).

    Args:
        root: output folder; receives ``images/banner/`` and ``masks/banner/``.
        count: number of images.
        seed: generator seed.
        size: image side in pixels.
        backgrounds: image files to crop backgrounds from (70% of images); procedural otherwise.
        plates: probability that a banner's central text or logo sits on a solid plate of its own.
        max_banners: each image carries 1..``max_banners`` banners (later ones may occlude earlier ones).
    """
    if max_banners < 1:
        raise ValueError(f"max_banners must be >= 1, got {max_banners}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    photos = PhotoBackgrounds(backgrounds, size) if backgrounds else None
    for folder in ("images", "masks"):
        (root / folder / CATEGORY).mkdir(parents=True, exist_ok=True)
    for index in progress_bar(range(count), desc="generating banners", unit="img", disable=not progress):
        image, masks = make_banner_image(rng, size, photos, max_banners=max_banners, plates=plates)
        labels = np.zeros(image.shape[:2], np.uint8)
        for value, mask in enumerate(masks, start=1):
            labels[mask] = value
        Image.fromarray(image).save(root / "images" / CATEGORY / f"{index:04d}.png")
        Image.fromarray(labels).save(root / "masks" / CATEGORY / f"{index:04d}.png")
    return root
