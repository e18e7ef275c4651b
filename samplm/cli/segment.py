"""``samplm segment``: click-free instance segmentation of a folder of images, with the options of
:class:`~samplm.segment.settings.SegmentSettings`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..segment.settings import SegmentSettings
from ..utils.checks import printable
from .common import CONFIG_HELP, add_model_options, model_settings, predictor
from .options import add_settings, require, settings_from
from .prototype import reference

if TYPE_CHECKING:
    from ..decoder.predictor import CustomSamPredictor
    from ..decoder.sam2_predictor import CustomSam2Predictor
    from ..segment.jobs import SegmentTask


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm segment``: the segmentation options, then the model options."""
    segment = sub.add_parser(
        "segment",
        help="find every instance in a folder of images, no clicks (adapter + location prior)",
        description="Segment every image of --images with each --adapter (one COCO category each): clicks "
        "come from the adapter's prototype.safetensors (location prior) or, without one, a grid. With "
        "--reference-image/--reference-mask a one-shot prototype is fitted instead (no adapter needed). "
        "Writes results.json (COCO results, RLE), images.json, summary.json and overlays/ into --out; "
        "re-running the same command skips finished images.",
    )
    add_settings(segment, SegmentSettings)
    add_model_options(segment, cache=False)
    segment.add_argument("--config", help=CONFIG_HELP)
    return segment


def _images(settings: SegmentSettings) -> list[Path]:
    """The image files of ``--images`` (the first ``--max-images``)."""
    from ..data.images import find_images

    images = find_images(settings.images)[: settings.max_images]
    if not images:
        raise ValueError(f"no images found in --images {settings.images}")
    return images


def _tasks(
    engine: CustomSamPredictor | CustomSam2Predictor, settings: SegmentSettings
) -> tuple[list[SegmentTask], list[str]]:
    """``make_tasks``'s ``(tasks, notes)`` for ``--adapter`` / ``--reference-*`` and the prompt options."""
    from ..segment.jobs import make_tasks

    one_shot = None
    if settings.reference_image:
        one_shot = reference(settings.reference_image, settings.reference_mask, engine, None)
    return make_tasks(
        engine,
        settings.adapter or [],
        reference=one_shot,
        prompts=settings.prompts,
        prior=settings.prior(),
        **settings.generator_options(),
    )


def run(options: dict[str, Any]) -> int:
    """``samplm segment``: tasks from adapters / a reference, then every image of ``--images``."""
    from ..segment.jobs import segment_images

    require(options, "images", "out", "model_type")
    settings = settings_from(SegmentSettings, options)
    if bool(settings.reference_image) != bool(settings.reference_mask):
        raise ValueError("--reference-image and --reference-mask go together")
    model = model_settings(options)
    _, ranks = model.placement()  # every step below that may fail on one rank fails them all
    images = ranks.together(lambda: _images(settings))
    engine = predictor(model)
    tasks, notes = ranks.together(lambda: _tasks(engine, settings))
    for note in notes if ranks.is_main else ():
        print(f"samplm: note: {printable(note)}", file=sys.stderr)
    summary = segment_images(
        engine,
        tasks,
        images,
        settings.out,
        overlays=not settings.no_overlays,
        max_pixels=settings.max_pixels,
        min_score=settings.min_score,
        progress=ranks.is_main,
        ranks=ranks,
    )
    if not ranks.is_main:
        return 0
    for reason in summary.failed.values():
        print(f"samplm: skipped an image: {printable(reason)}", file=sys.stderr)
    print(summary.line())
    print(f"results written to {Path(settings.out) / 'results.json'} (COCO), overlays/ and summary.json")
    return 0
