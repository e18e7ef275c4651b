"""What a :func:`~samplm.segment.jobs.segment_images` run did: each process's :class:`ShardOutcome`, and
the :class:`SegmentSummary` merged from them (what ``summary.json`` holds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ShardOutcome:
    """One process's share of a segment run (sent to the main process to merge).

    Attributes:
        rank: the process.
        entries: ``{image id: per-image entry}`` of its finished images (segmented now or resumed).
        segmented, resumed: how many of them were segmented now / taken from an earlier run.
        seconds: wall time of the images segmented now.
        failed: ``{image id: (path, reason)}`` of the images it skipped.
    """

    rank: int = 0
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    segmented: int = 0
    resumed: int = 0
    seconds: float = 0.0
    failed: dict[int, tuple[str, str]] = field(default_factory=dict)

    def add(self, image_id: int, entry: dict[str, Any], seconds: float | None = None) -> None:
        """Record a finished image: segmented now in ``seconds``, or resumed (``None``)."""
        self.entries[image_id] = entry
        if seconds is None:
            self.resumed += 1
        else:
            self.segmented += 1
            self.seconds += seconds


@dataclass
class SegmentSummary:
    """Counts of a :func:`segment_images` run (also written to ``summary.json``).

    Attributes:
        images: images considered.
        segmented: images segmented by this run.
        resumed: images skipped because an earlier run had finished them.
        no_match: images (of all finished ones) with no mask in any category.
        failed: ``{image path: reason}`` of images skipped: unreadable, above the pixel limit, or of an
            aspect ratio SAM cannot resize.
        masks: masks in ``results.json``.
        seconds_per_image: mean wall time of the images segmented by this run; ``None`` (``null`` in
            ``summary.json``) when this run segmented none (every image resumed or failed): there is
            nothing to time, and 0.0 would read as infinitely fast.
        prompts: ``{category: "prior" | "grid"}``.
        world_size: the processes that shared the run (1 unless launched sharded).
        ranks: what each process did: ``{"rank", "image_ids" (those it segmented or resumed, and those
            that failed), "segmented", "resumed", "failed"}``, in rank order.
    """

    images: int = 0
    segmented: int = 0
    resumed: int = 0
    no_match: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    masks: int = 0
    seconds_per_image: float | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    world_size: int = 1
    ranks: list[dict[str, Any]] = field(default_factory=list)

    def line(self) -> str:
        """One line for the terminal."""
        timing = (
            "no time per image (none segmented by this run)"
            if self.seconds_per_image is None
            else f"{self.seconds_per_image:.3f} s per image"
        )
        return (
            f"{self.images} images: {self.segmented} segmented, {self.resumed} already done, "
            f"{self.no_match} without a match, {len(self.failed)} failed; {self.masks} masks; {timing}"
        )


def merged_summary(
    shards: Sequence[ShardOutcome], images: int, prompts: dict[str, str], world_size: int = 1
) -> SegmentSummary:
    """The run's summary from every process's outcome (failures in image order, whoever met them; the
    counts of images without a match and of masks over every finished image)."""
    segmented = sum(s.segmented for s in shards)
    entries = [entry for s in shards for entry in s.entries.values()]
    failed = sorted((i, reason) for s in shards for i, reason in s.failed.items())
    return SegmentSummary(
        images=images,
        segmented=segmented,
        resumed=sum(s.resumed for s in shards),
        no_match=sum(not any(entry["masks"]) for entry in entries),
        masks=sum(len(records) for entry in entries for records in entry["masks"]),
        failed={path: reason for _, (path, reason) in failed},
        seconds_per_image=sum(s.seconds for s in shards) / segmented if segmented else None,
        prompts=prompts,
        world_size=world_size,
        ranks=[
            {
                "rank": s.rank,
                "image_ids": sorted([*s.entries, *s.failed]),
                "segmented": s.segmented,
                "resumed": s.resumed,
                "failed": len(s.failed),
            }
            for s in shards
        ],
    )
