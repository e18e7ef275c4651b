"""Fitting a :class:`~samplm.adapter.prototype.TargetPrototype`: from reference images and masks
(``samplm fit-prototype``, one-shot use) or from a training set's cached embeddings and targets (what
``samplm train`` writes beside the adapter)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
from segment_anything import SamPredictor
from torch import Tensor

from ..adapter.prototype import TargetPrototype
from ..base.bases import as_base
from ..errors import PrototypeError
from ..train.targets import to_padded_grid
from ..train.training_set import TrainingSet


def fit_prototype(
    predictor: SamPredictor,
    pairs: Iterable[tuple[np.ndarray, np.ndarray]],
    *,
    task: str | None = None,
) -> TargetPrototype:
    """A prototype from reference images and their target masks (one-shot: a single pair).

    Args:
        predictor: a ``SamPredictor``, :class:`~samplm.CustomSamPredictor` or
            :class:`~samplm.CustomSam2Predictor` whose image encoder embeds the references; its current
            image is replaced.
        pairs: ``(image H x W x 3 RGB uint8, mask H x W bool)`` per reference.
        task: recorded in the prototype.

    Raises:
        PrototypeError: a mask's size differs from its image's, or no mask covers anything.
    """
    base = as_base(predictor.model)
    grid, img_size = base.embedding_size[0], base.image_size

    def cells() -> Iterator[tuple[Tensor, np.ndarray, tuple[int, int]]]:  # one embedding in memory at a time
        for index, (image, mask) in enumerate(pairs):
            if tuple(mask.shape[:2]) != tuple(image.shape[:2]):
                raise PrototypeError(
                    f"reference {index + 1}",
                    f"mask is {mask.shape[:2]} (H, W) but its image is {image.shape[:2]}: they must match",
                )
            predictor.set_image(image)
            weights = to_padded_grid(mask.astype(bool), tuple(predictor.input_size), img_size, grid)
            yield predictor.features.detach(), weights, tuple(predictor.input_size)

    return TargetPrototype.from_cells(cells(), img_size=img_size, encoder=base.encoder_key(), task=task)


def cell_coverage(low_res: np.ndarray, grid: int) -> np.ndarray:
    """The share of each embedding cell a low-res mask covers.

    Args:
        low_res: ``L x L`` bool mask in the padded low-res frame (``L`` a multiple of ``grid``).
        grid: the embedding side.

    Returns:
        ``grid x grid`` float32 weights in ``[0, 1]``.
    """
    factor = low_res.shape[-1] // grid
    return low_res.astype(np.float32).reshape(grid, factor, grid, factor).mean(axis=(1, 3))


def training_prototype(train_set: TrainingSet, task: str | None = None) -> TargetPrototype:
    """A prototype from every training instance of ``train_set`` (its cached embeddings and targets),
    as ``samplm train`` writes beside the adapter."""

    def pairs() -> Iterator[tuple[Tensor, np.ndarray, tuple[int, int]]]:
        entry, key = None, None
        for item in train_set.items:  # grouped by image: each embedding is read once
            if key != (item.image_path, item.expected_size):
                key = (item.image_path, item.expected_size)
                entry = train_set.cache.get(*key)
            weights = cell_coverage(item.target.low_res, train_set.grid)
            yield entry.embedding, weights, entry.input_size

    return TargetPrototype.from_cells(
        pairs(), img_size=train_set.img_size, encoder=train_set.cache.key, task=task
    )
