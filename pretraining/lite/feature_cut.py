"""Whole-object masks from the trunk's semantics: a normalised cut of a view's trunk features.

The colour hierarchy (:mod:`pretraining.lite.regions`) knows regions, not objects. The ImageNet trunk's
features do: cells of one object have similar features. Per view, the cells of the stride-16 feature map
are the nodes of a graph whose edge weights are the squared positive cosine of their centred features;
the normalised cut's spectral embedding (Shi & Malik: the smallest eigenvectors of the normalised
Laplacian, scaled by ``D^-1/2``) is clustered into ``k`` groups by k-means, each group's connected parts
become objects, and objects snap to the hierarchy's leaves (each Felzenszwalb leaf takes the object that
covers most of it), so their outlines follow image edges.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from scipy.cluster.vq import kmeans2


def spectral_embedding(features: np.ndarray, dims: int) -> np.ndarray:
    """The normalised-cut embedding of a ``C x h x w`` feature map: ``(h * w) x dims`` (the eigenvectors
    of the normalised Laplacian after the first, smallest first, scaled by ``D^-1/2``; the first is the
    constant one when the affinity graph is connected, as it is for a trunk's features in practice)."""
    cells = features.reshape(len(features), -1).T.astype(np.float64)
    cells -= cells.mean(0)
    cells /= np.linalg.norm(cells, axis=1, keepdims=True) + 1e-8
    affinity = np.clip(cells @ cells.T, 0.0, None) ** 2
    scale = 1.0 / np.sqrt(affinity.sum(1) + 1e-8)
    laplacian = np.eye(len(affinity)) - scale[:, None] * affinity * scale[None, :]
    _, vectors = np.linalg.eigh(laplacian)
    return vectors[:, 1 : dims + 1] * scale[:, None]


def feature_objects(features: np.ndarray, leaves: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Object label map of one view: ``h x w`` int32 at the leaves' resolution, one id per object.

    Args:
        features: ``C x gh x gw`` trunk features of the view (stride 16).
        leaves: ``h x w`` leaf label map of its hierarchy (``Hierarchy.leaves``).
        k: clusters of the spectral embedding (an object is a connected part of one cluster).
        seed: k-means seed.
    """
    return cluster_objects(spectral_embedding(features, max(1, k - 1)), features.shape[1:], leaves, k, seed)


def cluster_objects(
    embedding: np.ndarray, grid: tuple[int, int], leaves: np.ndarray, k: int, seed: int = 0
) -> np.ndarray:
    """:func:`feature_objects` from a view's :func:`spectral_embedding` (``(gh * gw) x d``, ``d >= k - 1``;
    its first ``k - 1`` columns are clustered), so several ``k`` can share one embedding."""
    gh, gw = grid
    _, groups = kmeans2(embedding[:, : max(1, k - 1)], k, seed=seed, minit="++")
    groups = cv2.resize(
        groups.reshape(gh, gw).astype(np.int32), leaves.shape[::-1], interpolation=cv2.INTER_NEAREST
    )
    votes = np.zeros((int(leaves.max()) + 1, int(groups.max()) + 1), np.int64)
    np.add.at(votes, (leaves, groups), 1)
    snapped = votes.argmax(1)[leaves]  # each leaf takes the group covering most of it
    objects = np.zeros_like(snapped)
    offset = 0
    for group in np.unique(snapped):
        parts, count = ndimage.label(snapped == group)
        objects[parts > 0] = parts[parts > 0] + offset
        offset += count
    return objects


def object_at(objects: np.ndarray, y: int, x: int) -> np.ndarray:
    """``h x w`` bool mask of the object under the click ``(y, x)``."""
    return objects == objects[y, x]


def with_object(
    levels: list[np.ndarray], obj: np.ndarray, min_area: float, max_area: float
) -> list[np.ndarray]:
    """A click's answers (``h x w`` bool masks, smallest first) with its feature-cut object as the largest.

    The object, if its pixel count is within ``[min_area, max_area]`` and above the two smallest
    answers', follows them (it takes the place of a third answer); otherwise the answers stand. Sizes
    are compared, not shapes: the object holds the click's leaf but need not hold the smaller answers.
    """
    area, kept = int(obj.sum()), levels[:2]
    if not min_area <= area <= max_area or any(m.sum() >= area for m in kept):
        return levels
    return [*kept, obj]
