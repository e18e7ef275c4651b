"""``SegmentSettings`` and ``FitPrototypeSettings``: the options of ``samplm segment`` (what
:func:`~samplm.segment.jobs.make_tasks` and :func:`~samplm.segment.jobs.segment_images` are given) and of
``samplm fit-prototype`` (:func:`~samplm.segment.prototype_fitting.fit_prototype`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.images import DEFAULT_MAX_PIXELS
from ..prompts.location_prior import PriorSettings
from ..utils.checks import Limit
from ..utils.settings import about
from .generator import MIN_SCORE, PROMPT_SOURCES

_PRIOR = PriorSettings()
_SHARE = Limit(float, 0, 1)
#: The settings of :class:`~samplm.segment.generator.AdapterMaskGenerator` that ``samplm segment`` sets.
GENERATOR_OPTIONS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
)


@dataclass(frozen=True)
class SegmentSettings:
    """Adapters or a one-shot reference, the images, and how clicks are found and masks kept."""

    adapter: list[str] | None = field(
        default=None, metadata=about("adapter(s): directory, .safetensors, org/repo[@rev] or name")
    )
    images: str | None = field(default=None, metadata=about("folder of images (searched recursively)"))
    out: str | None = field(default=None, metadata=about("output directory"))
    reference_image: list[str] | None = field(default=None, metadata=about("one-shot reference image(s)"))
    reference_mask: list[str] | None = field(
        default=None, metadata=about("their masks (same order), non-zero pixels = target")
    )
    prompts: str = field(
        default="auto",
        metadata=about("clicks from the prior, a grid, or auto (default)", choices=PROMPT_SOURCES),
    )
    max_images: int | None = field(
        default=None,
        metadata=about("segment at most this many images (the first, sorted)", limit=Limit(int, 1)),
    )
    max_pixels: int = field(
        default=DEFAULT_MAX_PIXELS,
        metadata=about(
            "skip (and count) images of more pixels than this, read from the header (default 80000000)",
            limit=Limit(int, 1),
        ),
    )
    points_per_side: int = field(
        default=32, metadata=about("grid prompts: clicks per side (default 32)", limit=Limit(int, 1, 256))
    )
    points_per_batch: int = field(
        default=64, metadata=about("prompts decoded together (default 64)", limit=Limit(int, 1, 4096))
    )
    pred_iou_thresh: float | None = field(
        default=None,
        metadata=about("keep masks with predicted IoU above (default: 0.88 grid, 0 prior)", limit=_SHARE),
    )
    stability_score_thresh: float | None = field(
        default=None,
        metadata=about("keep masks this stable (default: 0.95 grid, 0 prior)", limit=_SHARE),
    )
    box_nms_thresh: float = field(
        default=0.7,
        metadata=about("box IoU above which duplicates are removed (default 0.7)", limit=_SHARE),
    )
    min_score: float = field(
        default=MIN_SCORE,
        metadata=about(
            f"keep and draw only masks scoring at least this (score = predicted IoU x similarity to the "
            f"target; default {MIN_SCORE}; 0 keeps all)",
            limit=_SHARE,
        ),
    )
    min_similarity: float = field(
        default=_PRIOR.min_similarity,
        metadata=about("prior: least cosine similarity of a click (default 0.4)", limit=Limit(float, -1, 1)),
    )
    relative: float = field(
        default=_PRIOR.relative,
        metadata=about("prior: least share of the image's top similarity (default 0.5)", limit=_SHARE),
    )
    max_clicks: int = field(
        default=_PRIOR.max_clicks,
        metadata=about("prior: at most this many prompts per image (default 8)", limit=Limit(int, 1, 4096)),
    )
    no_overlays: bool = field(default=False, metadata=about("do not write overlay PNGs"))

    def prior(self) -> PriorSettings:
        """The location prior's settings: ``min_similarity``, ``relative`` and ``max_clicks``."""
        return PriorSettings(
            min_similarity=self.min_similarity, relative=self.relative, max_clicks=self.max_clicks
        )

    def generator_options(self) -> dict[str, Any]:
        """The keywords of :class:`~samplm.segment.generator.AdapterMaskGenerator` named in
        :data:`GENERATOR_OPTIONS`."""
        return {name: getattr(self, name) for name in GENERATOR_OPTIONS}


@dataclass(frozen=True)
class FitPrototypeSettings:
    """Reference images and masks, and where the prototype fitted on them goes."""

    images: list[str] | None = field(default=None, metadata=about("reference image files or folders"))
    masks: list[str] | None = field(
        default=None, metadata=about("their masks (files or folders, paired in sorted order)")
    )
    adapter: str | None = field(
        default=None, metadata=about("adapter directory to write prototype.safetensors into")
    )
    out: str | None = field(
        default=None, metadata=about("or: the prototype file (.safetensors) or directory to write")
    )
    task: str | None = field(
        default=None, metadata=about("task name recorded in the prototype (default: the adapter's)")
    )
