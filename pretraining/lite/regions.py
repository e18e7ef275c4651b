"""Multi-granularity pseudo-masks for a real photo: a region hierarchy without a teacher.

Leaves are Felzenszwalb segments of the photo. Neighbouring regions are merged greedily, most similar
first (selective-search style), where similarity mixes the cosine of the regions' mean ImageNet trunk
features (what the regions *are*), their colour distance (Lab) and a size term that merges small
regions first. Every merge is a region of the hierarchy; a click's chain of nested regions, from its
leaf up, gives part / object / group answers for SAM's three outputs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.segmentation import felzenszwalb


@dataclass
class Hierarchy:
    """Regions of one view at the target (low) resolution.

    Attributes:
        leaves: ``h x w`` int32 leaf label map.
        members: per region, the sorted leaf ids it covers (leaves first, then merges in order).
        parent: per region, the index of the region it merged into (-1 for the root).
        area: per region, its pixel count at the target resolution.
        level: per region, the similarity of the merge that formed it (leaves: the highest of any
            merge, so that a leaf's persistence counts from the start of the merging).
    """

    leaves: np.ndarray
    members: list[np.ndarray]
    parent: np.ndarray
    area: np.ndarray
    level: np.ndarray

    def mask(self, region: int) -> np.ndarray:
        """``h x w`` bool mask of ``region``."""
        return np.isin(self.leaves, self.members[region])

    def chain(self, y: int, x: int) -> list[int]:
        """Regions containing pixel ``(y, x)``, smallest first (leaf to root)."""
        node = int(self.leaves[y, x])
        out = []
        while node >= 0:
            out.append(node)
            node = int(self.parent[node])
        return out


def _region_stats(labels: np.ndarray, n: int, lab: np.ndarray, feats: np.ndarray):
    flat = labels.ravel()
    area = np.bincount(flat, minlength=n).astype(np.float64)
    colour = np.stack([np.bincount(flat, lab[..., c].ravel(), n) for c in range(3)], 1) / area[:, None]
    f = feats.reshape(feats.shape[0], -1).T
    deep = np.zeros((n, f.shape[1]))
    np.add.at(deep, flat, f)
    deep /= area[:, None]
    return area, colour, deep


def _adjacency(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        diff = a != b
        lo, hi = np.minimum(a[diff], b[diff]), np.maximum(a[diff], b[diff])
        pairs.update(zip(lo.tolist(), hi.tolist(), strict=True))
    return pairs


def _similarity(i: int, j: int, area, colour, deep, total: float) -> float:
    di, dj = deep[i], deep[j]
    cos = float(di @ dj / (np.linalg.norm(di) * np.linalg.norm(dj) + 1e-8))
    col = float(np.exp(-np.linalg.norm(colour[i] - colour[j]) / 20.0))
    size = 1.0 - (area[i] + area[j]) / total
    return 1.5 * cos + col + size


def build_hierarchy(
    image: np.ndarray,
    features: np.ndarray,
    low_res: tuple[int, int],
    scale: float = 100.0,
    min_size: int = 40,
) -> Hierarchy:
    """Region hierarchy of ``image`` (``H x W x 3`` uint8) at ``low_res`` (h, w).

    ``features``: ``C x h' x w'`` trunk features of the same view (any grid; resized to ``low_res``);
    they are centred per channel so that their cosine measures what sets two regions apart.
    """
    segments = felzenszwalb(image, scale=scale, sigma=0.8, min_size=min_size)
    labels = cv2.resize(segments.astype(np.int32), low_res[::-1], interpolation=cv2.INTER_NEAREST)
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(low_res).astype(np.int32)
    n = int(labels.max()) + 1
    small = cv2.resize(image, low_res[::-1], interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float64)
    feats = np.stack([cv2.resize(c, low_res[::-1], interpolation=cv2.INTER_LINEAR) for c in features])
    feats -= feats.reshape(len(feats), -1).mean(1)[:, None, None]  # cosine of what sets regions apart
    area, colour, deep = _region_stats(labels, n, lab, feats.astype(np.float64))
    return _merge(labels, n, area, colour, deep)


def _merge(labels, n, area, colour, deep) -> Hierarchy:
    total = float(labels.size)
    capacity = 2 * n
    area = np.concatenate([area, np.zeros(n)])
    colour = np.concatenate([colour, np.zeros((n, 3))])
    deep = np.concatenate([deep, np.zeros((n, deep.shape[1]))])
    members = [np.array([i]) for i in range(n)]
    parent = -np.ones(capacity, np.int64)
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for i, j in _adjacency(labels):
        neighbours[i].add(j)
        neighbours[j].add(i)
    heap = [
        (-_similarity(i, j, area, colour, deep, total), i, j)
        for i in neighbours
        for j in neighbours[i]
        if i < j
    ]
    heapq.heapify(heap)
    alive = set(range(n))
    level = [np.inf] * n
    while heap:
        negative, i, j = heapq.heappop(heap)
        if i not in alive or j not in alive:
            continue
        k = len(members)
        level.append(-negative)
        w_i, w_j = area[i], area[j]
        area[k] = w_i + w_j
        colour[k] = (colour[i] * w_i + colour[j] * w_j) / area[k]
        deep[k] = (deep[i] * w_i + deep[j] * w_j) / area[k]
        members.append(np.union1d(members[i], members[j]))
        parent[i] = parent[j] = k
        alive -= {i, j}
        neighbours[k] = (neighbours.pop(i) | neighbours.pop(j)) - {i, j}
        for m in neighbours[k]:
            neighbours[m] -= {i, j}
            neighbours[m].add(k)
            heapq.heappush(heap, (-_similarity(k, m, area, colour, deep, total), min(k, m), max(k, m)))
        alive.add(k)
    count = len(members)
    level = np.array(level)
    level[:n] = level[n:].max(initial=0.0)
    return Hierarchy(labels, members, parent[:count], area[:count], level)


def click_levels(
    hierarchy: Hierarchy,
    y: int,
    x: int,
    min_area: float,
    max_area: float,
    distinct_iou: float = 0.75,
) -> list[int]:
    """Up to three nested regions for a click at ``(y, x)``: the smallest, a middle and the largest
    region of its chain whose area is within ``[min_area, max_area]`` pixels, skipping regions whose
    IoU with the previous kept region (area ratio, as they are nested) exceeds ``distinct_iou``."""
    kept: list[int] = []
    for region in hierarchy.chain(y, x):
        a = hierarchy.area[region]
        if a < min_area:
            continue
        if a > max_area:
            break
        if kept and hierarchy.area[kept[-1]] / a > distinct_iou:
            kept[-1] = region
            continue
        kept.append(region)
    if len(kept) <= 3:
        return kept
    areas = np.log(hierarchy.area[kept])
    middle = kept[int(np.argmin(np.abs(areas - (areas[0] + areas[-1]) / 2)))]
    return [kept[0], middle, kept[-1]]


def persistence(hierarchy: Hierarchy, region: int) -> float:
    """How long ``region`` survives the merging: the similarity that formed it minus the similarity at
    which it merged into its parent (0 for the root). Object-like regions form early and merge late."""
    parent = int(hierarchy.parent[region])
    if parent < 0:
        return 0.0
    return float(hierarchy.level[region] - hierarchy.level[parent])


def persistent_levels(hierarchy: Hierarchy, y: int, x: int, min_area: float, max_area: float) -> list[int]:
    """Up to three nested regions for a click at ``(y, x)``, chosen by persistence: the most persistent
    region of the lower half of its chain (within ``[min_area, max_area]`` pixels), the most persistent
    of the upper half without the largest, and the largest region."""
    chain = [r for r in hierarchy.chain(y, x) if min_area <= hierarchy.area[r] <= max_area]
    if len(chain) <= 2:
        return chain
    small, middle = _persistent_halves(hierarchy, chain)
    return list(dict.fromkeys([small, middle, chain[-1]]))


def _persistent_halves(hierarchy: Hierarchy, chain: list[int]) -> tuple[int, int]:
    """The most persistent region of the lower half of ``chain`` (leaf to root, at least 3 regions) and
    the most persistent of its upper half without the largest."""
    half = len(chain) // 2
    small = max(chain[:half], key=lambda r: persistence(hierarchy, r))
    upper = max(chain[half:-1] or chain[-1:], key=lambda r: persistence(hierarchy, r))
    return small, upper


def _log_area_middle(hierarchy: Hierarchy, chain: list[int], lower: int, upper: int) -> int | None:
    """The region of ``chain`` strictly between ``lower`` and ``upper`` whose log-area is nearest the
    mean of theirs (``None`` when they are neighbours in the chain)."""
    inner = chain[chain.index(lower) + 1 : chain.index(upper)]
    if not inner:
        return None
    areas = np.log(hierarchy.area[inner])
    middle = (np.log(hierarchy.area[lower]) + np.log(hierarchy.area[upper])) / 2
    return inner[int(np.argmin(np.abs(areas - middle)))]


def _with_middle(hierarchy: Hierarchy, chain: list[int], lower: int, upper: int) -> list[int]:
    """``[lower, the log-area middle between them, upper]``, without the middle when there is none."""
    middle = _log_area_middle(hierarchy, chain, lower, upper)
    return [lower, upper] if middle is None else [lower, middle, upper]


def persistent_ends_levels(
    hierarchy: Hierarchy, y: int, x: int, min_area: float, max_area: float
) -> list[int]:
    """Up to three nested regions for a click at ``(y, x)``: the persistence rule's two object-like
    regions (:func:`persistent_levels`' first two: the most persistent of the lower half of the chain and
    of its upper half without the largest) and between them the region nearest their log-area middle.
    The largest region (often the background around an object) is not an answer."""
    chain = [r for r in hierarchy.chain(y, x) if min_area <= hierarchy.area[r] <= max_area]
    if len(chain) <= 2:
        return chain
    return _with_middle(hierarchy, chain, *_persistent_halves(hierarchy, chain))


def persistent_part_levels(
    hierarchy: Hierarchy, y: int, x: int, min_area: float, max_area: float
) -> list[int]:
    """Up to three nested regions for a click at ``(y, x)``: the most persistent region of the lower half
    of the chain (an object-like part, where the area rule takes the smallest region), the largest
    region, and between them the region nearest their log-area middle."""
    chain = [r for r in hierarchy.chain(y, x) if min_area <= hierarchy.area[r] <= max_area]
    if len(chain) <= 2:
        return chain
    part, _ = _persistent_halves(hierarchy, chain)
    return _with_middle(hierarchy, chain, part, chain[-1])


def anchored_levels(hierarchy: Hierarchy, y: int, x: int, min_area: float, max_area: float) -> list[int]:
    """Up to three nested regions for a click at ``(y, x)``: the area rule's smallest and largest
    (:func:`click_levels`), and between them the most persistent region of the chain (a whole object
    where the area rule's log-area middle may fall on a part)."""
    ends = click_levels(hierarchy, y, x, min_area, max_area)
    if len(ends) <= 2:
        return ends
    chain = hierarchy.chain(y, x)
    inner = chain[chain.index(ends[0]) + 1 : chain.index(ends[-1])]
    middle = max(inner, key=lambda r: persistence(hierarchy, r))
    return [ends[0], middle, ends[-1]]
