"""Location prior: clicks from a target prototype, without a user.

The cosine similarity of every embedding cell to a :class:`~samplm.adapter.prototype.TargetPrototype` says
where the target probably is. As in PerSAM, high cells become positive clicks and the lowest cells
negative clicks; unlike PerSAM (one object, one click), every local maximum above a threshold becomes
its own prompt, so several instances in one image are each found.

Coordinates: clicks are cell centres in SAM's *input* frame (after ``ResizeLongestSide``, before
padding), the frame :meth:`CustomSamPredictor.decode` takes; cells over the padding are never used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..adapter.prototype import TargetPrototype, valid_cells
from ..utils.checks import Limit, check_limits


@dataclass(frozen=True)
class PriorSettings:
    """How a similarity map becomes clicks.

    Attributes:
        min_similarity: a cell's cosine similarity must reach this to become a positive click; an
            image with no such cell has no match.
        relative: ... and also this share of the image's highest similarity (drops weak secondary
            peaks on images with a clear target).
        max_clicks: at most this many positive clicks (one prompt each), highest first.
        nms_radius: a positive click suppresses other peaks within this many cells (Chebyshev).
        negatives: negative clicks at the least similar cells, added to every prompt (PerSAM: 1).
    """

    min_similarity: float = 0.4
    relative: float = 0.5
    max_clicks: int = 8
    nms_radius: int = 2
    negatives: int = 1

    def __post_init__(self) -> None:
        check_limits(
            self,
            "PriorSettings",
            {
                "min_similarity": Limit(float, -1.0, 1.0),
                "relative": Limit(float, 0.0, 1.0),
                "max_clicks": Limit(int, 1, 4096),
                "nms_radius": Limit(int, 0, 64),
                "negatives": Limit(int, 0, 64),
            },
        )


@dataclass(frozen=True)
class LocationPrior:
    """Clicks found in one image.

    Attributes:
        similarity: ``h x w`` cosine similarity to the prototype (padded cells included).
        positives: ``K x 2`` XY input-frame clicks at local maxima, most similar first (``K`` may be 0).
        scores: ``K`` similarity of each positive click.
        negatives: ``N x 2`` XY input-frame clicks at the least similar cells.
    """

    similarity: Tensor
    positives: np.ndarray
    scores: np.ndarray
    negatives: np.ndarray

    def prompts(self) -> tuple[Tensor, Tensor]:
        """One prompt per positive click, each with every negative click.

        Returns:
            ``(coords K x (1 + N) x 2 float32, labels K x (1 + N) int32)`` in the input frame.
        """
        k, n = len(self.positives), len(self.negatives)
        coords = np.concatenate(
            [self.positives[:, None, :], np.broadcast_to(self.negatives, (k, n, 2))], axis=1
        )
        labels = np.concatenate([np.ones((k, 1)), np.zeros((k, n))], axis=1)
        return torch.as_tensor(coords, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int32)


def location_prior(
    embedding: Tensor,
    prototype: TargetPrototype,
    input_size: tuple[int, int],
    img_size: int,
    settings: PriorSettings | None = None,
) -> LocationPrior:
    """Clicks for one image from its embedding and a prototype.

    Args:
        embedding: ``1 x C x h x w`` image embedding (the padded input square).
        prototype: the target's prototype.
        input_size: ``(H', W')`` of the image after ``ResizeLongestSide``.
        img_size: the encoder's input side (SAM: 1024).
        settings: thresholds and counts (defaults: :class:`PriorSettings`).

    Returns:
        A :class:`LocationPrior`.
    """
    similarity = prototype.similarity(embedding, input_size, img_size).cpu()  # h x w: small
    return prior_from_similarity(similarity, input_size, img_size, settings)


def prior_from_similarity(
    similarity: Tensor,
    input_size: tuple[int, int],
    img_size: int,
    settings: PriorSettings | None = None,
) -> LocationPrior:
    """:func:`location_prior` from an already computed ``h x w`` CPU similarity map."""
    settings = settings or PriorSettings()
    h, w = similarity.shape
    centres = (torch.arange(max(h, w), dtype=torch.float32) + 0.5) * (img_size / w)
    valid = valid_cells((h, w), input_size, img_size)
    masked = torch.where(valid, similarity, torch.tensor(-torch.inf))
    size = 2 * settings.nms_radius + 1
    pooled = torch.nn.functional.max_pool2d(masked[None, None], size, 1, settings.nms_radius)[0, 0]
    top = float(masked.max())
    threshold = settings.min_similarity if top <= 0 else max(settings.min_similarity, settings.relative * top)
    peaks = (masked == pooled) & (masked >= threshold) & valid
    flat = torch.nonzero(peaks.flatten()).flatten()
    candidates = flat[torch.argsort(similarity.flatten()[flat], descending=True, stable=True)]
    order = _suppressed(candidates, w, settings.nms_radius, settings.max_clicks)
    lowest = torch.argsort(masked.flatten().masked_fill(~valid.flatten(), torch.inf))
    lowest = lowest[: min(settings.negatives, int(valid.sum()))]

    def xy(indices: Tensor) -> np.ndarray:
        rows, cols = indices // w, indices % w
        return torch.stack([centres[cols], centres[rows]], dim=1).numpy().reshape(-1, 2)

    return LocationPrior(similarity, xy(order), similarity.flatten()[order].numpy(), xy(lowest))


def _suppressed(candidates: Tensor, width: int, radius: int, limit: int) -> Tensor:
    """Greedy NMS on grid cells: keep candidates (flat indices, best first) farther than ``radius``
    cells (Chebyshev) from every kept one - local maxima tie on plateaus - up to ``limit``."""
    kept: list[int] = []
    for index in candidates.tolist():
        row, col = divmod(index, width)
        if all(max(abs(row - r), abs(col - c)) > radius for r, c in (divmod(k, width) for k in kept)):
            kept.append(index)
            if len(kept) == limit:
                break
    return torch.tensor(kept, dtype=torch.long)
