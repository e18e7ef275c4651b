"""Synthetic scenes for pretraining: 1-3 objects with wholes and parts on procedural or real-photo
backgrounds (all of ``samplm_tiny``'s corpus; the composites in ``samplm_lite``'s)."""

from __future__ import annotations

import numpy as np

from samplm.data.synthetic import PhotoBackgrounds, SceneObject, paste_object, procedural_background


def make_scene(
    rng: np.random.Generator,
    size: int = 256,
    photos: PhotoBackgrounds | None = None,
    max_objects: int = 3,
    plates: float = 0.0,
) -> tuple[np.ndarray, list[SceneObject]]:
    """One scene: (``size x size x 3`` uint8 image, its objects with whole and part masks).

    ``plates``: probability that an object's central part is a solid plate carrying text or a logo."""
    if photos is not None and len(photos) and rng.random() < 0.6:
        image = photos.sample(rng)
    else:
        image = procedural_background(rng, size)
    objects: list[SceneObject] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        objects.append(paste_object(image, objects, rng, scale=(0.35, 1.0), plates=plates))
    return image, [o for o in objects if o.whole.sum() >= 64]
