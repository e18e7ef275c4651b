"""SAM-style prompts on a corpus view: clicks answered by three nested targets, boxes by one.

Clicks: a target region is drawn with its size class balanced (small < 2 %, medium 2-10 %, large >= 10 %
of the image), the click falls at the region's centre (half the time) or anywhere in it; the click's
chain of nested regions gives the small / middle / large targets of SAM's three multimask outputs; where
the view holds a feature cut, the click's object becomes the large target (:func:`.feature_cut.with_object`;
larger than the others, but not always holding them).
Boxes: the (jittered) box of a drawn region, answered by the single-mask output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samplm.utils.geometry import center_point

from .corpus import LOW_RES, STRIDE, View
from .feature_cut import object_at, with_object
from .regions import (
    anchored_levels,
    click_levels,
    persistent_ends_levels,
    persistent_levels,
    persistent_part_levels,
)

SIZE_BINS = (0.02, 0.10)
MIN_AREA = 0.002
MAX_AREA = 0.8
#: How a click's three answers are chosen from its chain of regions (``--answers`` of the training run):
#: by area (smallest, log-area middle, largest), by persistence in the merging, anchored (the area
#: rule's smallest and largest, the most persistent region between them), persistence's two regions
#: with the region between them (no largest region), or the most persistent part, the largest region and
#: the region between them.
ANSWER_RULES = {
    "area": click_levels,
    "persistent": persistent_levels,
    "anchored": anchored_levels,
    "persistent-ends": persistent_ends_levels,
    "persistent-part": persistent_part_levels,
}


@dataclass
class ViewPrompts:
    """Prompts of one view. Coordinates are input pixels (the 512 px frame), targets low-res floats.

    Attributes:
        clicks: ``P x 1 x 2`` XY; click_targets: ``P x 3 x 128 x 128`` (small, middle, large).
        boxes: ``Q x 4`` XYXY; box_targets: ``Q x 1 x 128 x 128``.
    """

    clicks: torch.Tensor
    click_targets: torch.Tensor
    boxes: torch.Tensor
    box_targets: torch.Tensor

    def to(self, device: torch.device) -> ViewPrompts:
        """The same prompts on ``device``."""
        moved = (t.to(device) for t in (self.clicks, self.click_targets, self.boxes, self.box_targets))
        return ViewPrompts(*moved)


def _frame(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((LOW_RES, LOW_RES), np.float32)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


def _click_in(mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    if rng.random() < 0.5:
        x, y = center_point(mask)
        return int(y), int(x)
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def _box_of(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    w, h = box[2] - box[0], box[3] - box[1]
    box += rng.normal(0, 0.05, 4) * np.array([w, h, w, h])
    return np.clip(box * STRIDE, 0, LOW_RES * STRIDE)


def _pick_region(view: View, rng: np.random.Generator) -> int | None:
    h = view.hierarchy
    total = view.size[0] * view.size[1]
    frac = h.area / total
    ok = (frac >= MIN_AREA) & (frac <= MAX_AREA)
    bins = np.digitize(frac, SIZE_BINS)
    choices = [np.nonzero(ok & (bins == b))[0] for b in range(3)]
    choices = [c for c in choices if len(c)]
    if not choices:
        return None
    pool = choices[int(rng.integers(len(choices)))]
    return int(pool[int(rng.integers(len(pool)))])


def _hierarchy_click(view: View, rng: np.random.Generator) -> tuple[tuple[int, int], list[np.ndarray]] | None:
    region = _pick_region(view, rng)
    if region is None:
        return None
    h = view.hierarchy
    y, x = _click_in(h.mask(region), rng)
    total = view.size[0] * view.size[1]
    levels = ANSWER_RULES[view.answers](h, y, x, MIN_AREA * total, MAX_AREA * total)
    if not levels:
        return None
    masks = [h.mask(r) for r in levels]
    if view.cut is not None:
        masks = with_object(masks, object_at(view.cut, y, x), MIN_AREA * total, MAX_AREA * total)
    return (y, x), masks


def _object_click(view: View, rng: np.random.Generator) -> tuple[tuple[int, int], list[np.ndarray]]:
    obj = view.objects[int(rng.integers(len(view.objects)))]
    if obj.parts and rng.random() < 0.5:
        part = obj.parts[int(rng.integers(len(obj.parts)))]
        return _click_in(part, rng), [part, obj.whole]
    rest = obj.whole & ~np.any(obj.parts, axis=0) if obj.parts else obj.whole
    return _click_in(rest if rest.any() else obj.whole, rng), [obj.whole]


def _three(levels: list[np.ndarray]) -> np.ndarray:
    """Small, middle, large: a chain of 1 or 2 levels repeats its largest."""
    if len(levels) == 1:
        levels = levels * 3
    elif len(levels) == 2:
        levels = [levels[0], levels[1], levels[1]]
    return np.stack([_frame(m) for m in levels])


def sample_view_prompts(view: View, rng: np.random.Generator, clicks: int, boxes: int) -> ViewPrompts:
    """``clicks`` click prompts and ``boxes`` box prompts on ``view`` (fewer if the view has no regions);
    a click's three regions are picked by the view's rule (``view.answers``, one of :data:`ANSWER_RULES`)."""
    xy, click_targets, box_list, box_targets = [], [], [], []
    for _ in range(clicks):
        drawn = _object_click(view, rng) if view.objects else _hierarchy_click(view, rng)
        if drawn is None:
            continue
        (y, x), levels = drawn
        xy.append([(x + 0.5) * STRIDE, (y + 0.5) * STRIDE])
        click_targets.append(_three(levels))
    for _ in range(boxes):
        drawn = _object_click(view, rng) if view.objects else _hierarchy_click(view, rng)
        if drawn is None:
            continue
        target = drawn[1][int(rng.integers(len(drawn[1])))]
        box_list.append(_box_of(target, rng))
        box_targets.append(_frame(target)[None])
    return ViewPrompts(
        clicks=torch.tensor(np.array(xy, np.float32).reshape(-1, 1, 2)),
        click_targets=torch.tensor(np.array(click_targets, np.float32).reshape(-1, 3, LOW_RES, LOW_RES)),
        boxes=torch.tensor(np.array(box_list, np.float32).reshape(-1, 4)),
        box_targets=torch.tensor(np.array(box_targets, np.float32).reshape(-1, 1, LOW_RES, LOW_RES)),
    )
