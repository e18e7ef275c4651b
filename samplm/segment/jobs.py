"""Segment a folder of images without clicks: ``samplm segment`` as a library function.

Each :class:`SegmentTask` is one category: an adapter (or the base decoder) and an
:class:`~samplm.segment.generator.AdapterMaskGenerator` (prompts from its location prior, or a grid). Every
image is encoded once, whatever the number of tasks. Written into ``out``::

    results.json        COCO results: [{image_id, category_id, segmentation (RLE), bbox, score, ...}]
    images.json         COCO "images" and "categories" (ids of results.json)
    summary.json        counts: images, segmented, resumed, no match, failed (with reasons), masks
    overlays/           one PNG per image: each mask drawn over the photo in its own colour, with its
                        category and score
    per_image/          one JSON per finished image (what makes a run resumable)

Image ids are positions (from 1) in the sorted list of the folder's images, so they are stable while
the folder is unchanged. A run interrupted or repeated skips images whose ``per_image`` file exists and
was made by the same tasks from the same file content (SHA-256 of its bytes: an image replaced under the
same name is segmented again). An image that cannot be read, has more pixels than ``max_pixels`` (checked
from its header) or cannot be resized to SAM's input (an extreme aspect ratio such as 1 x 5000) is
reported and counted; the run goes on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..adapter.prompt_adapter import PromptAdapter
from ..adapter.prototype import TargetPrototype
from ..constants import PROTOTYPE_NAME
from ..data.images import DEFAULT_MAX_PIXELS, load_image
from ..decoder.predictor import CustomSamPredictor
from ..errors import DataError, ImageError, PrototypeError
from ..prompts.location_prior import PriorSettings
from ..utils.checks import first_line
from ..utils.files import atomic_write, atomic_write_text, sha256_file
from ..utils.fingerprint import update_with_state
from ..utils.geometry import rle_encode
from ..utils.progress import progress_bar
from ..utils.ranks import Ranks
from .generator import MIN_SCORE, AdapterMaskGenerator
from .reading import ReadImage, read_ahead
from .summary import SegmentSummary, ShardOutcome, merged_summary

#: Colours (RGB) of the masks in an overlay: the image's masks in category order, best first, take them
#: in turn.
PALETTE = (
    (230, 25, 75),
    (0, 130, 200),
    (60, 180, 75),
    (255, 225, 25),
    (145, 30, 180),
    (70, 240, 240),
    (245, 130, 48),
    (240, 50, 230),
    (170, 110, 40),
    (128, 128, 0),
)


@dataclass(frozen=True)
class SegmentTask:
    """One category to find in every image.

    Attributes:
        name: category name (the adapter's task).
        adapter_name: the predictor's adapter to decode with; ``None``: the base decoder.
        generator: the mask generator (its ``prompts`` decide prior or grid).
    """

    name: str
    adapter_name: str | None
    generator: AdapterMaskGenerator

    def signature(self) -> dict[str, Any]:
        """What the results of this task depend on, stored with each image's results: the adapter (name
        and weights), the base's image encoder and the generator's settings."""
        weights = None
        if self.adapter_name is not None:
            adapter = self.generator.predictor.get_adapter(self.adapter_name)
            weights = adapter.config.weights_sha256 or _digest_state(adapter)
        return {
            "name": self.name,
            "adapter": self.adapter_name,
            "weights": weights,
            **self.generator.settings(),
        }


def make_tasks(
    predictor: CustomSamPredictor,
    adapters: Sequence[str | os.PathLike[str]] = (),
    *,
    reference: TargetPrototype | None = None,
    prompts: str = "auto",
    prior: PriorSettings | None = None,
    **generator_options: Any,
) -> tuple[list[SegmentTask], list[str]]:
    """One task per adapter (loaded into ``predictor``), or one base-decoder task for a reference.

    Each adapter's prompts come from ``reference`` if given, else from the ``prototype.safetensors``
    beside the adapter; an adapter without one falls back to a grid of clicks (unless ``prompts`` is
    ``"prior"``, which then raises :class:`~samplm.errors.PrototypeError`), and a note says so.

    Args:
        predictor: receives the adapters.
        adapters: adapter directories, files, Hub ids or short names.
        reference: a one-shot prototype (:func:`~.prototype_fitting.fit_prototype`); without adapters,
            one task decodes it with the base decoder (PerSAM's training-free setting).
        prompts, prior, generator_options: for each :class:`AdapterMaskGenerator`.

    Returns:
        ``(tasks, notes)``: the tasks and one line per adapter that fell back to a grid.
    """
    if not adapters and reference is None:
        raise ValueError("nothing to segment: give adapters (--adapter), or a reference image and mask")
    options = {"prompts": prompts, "prior": prior, **generator_options}
    if not adapters:
        generator = AdapterMaskGenerator(predictor, prototype=reference, **options)
        return [SegmentTask(reference.task or "reference", None, generator)], []
    tasks, notes = [], []
    for spec in adapters:
        adapter = PromptAdapter.load(spec)
        name = _free_name(adapter.task, predictor.adapters)
        predictor.load_adapter(adapter, adapter_name=name)
        prototype = reference if reference is not None else adapter.prototype
        if prototype is None and prompts == "prior":
            raise PrototypeError(
                spec,
                f"adapter {name!r} has no {PROTOTYPE_NAME}: write one with `samplm fit-prototype`, or use "
                "grid prompts (--prompts grid)",
            )
        if prototype is None:
            notes.append(
                f"adapter {name!r} ({adapter.source}) has no {PROTOTYPE_NAME}: segmenting with a grid of "
                "clicks (class-agnostic, scored by predicted IoU); write one with `samplm fit-prototype`"
            )
        tasks.append(SegmentTask(name, name, AdapterMaskGenerator(predictor, prototype=prototype, **options)))
    return tasks, notes


def _free_name(task: str, taken: Sequence[str]) -> str:
    """``task``, or ``task#2``, ``task#3``, ... : the first name not in ``taken``."""
    name, number = task, 1
    while name in taken:
        number += 1
        name = f"{task}#{number}"
    return name


def segment_images(
    predictor: CustomSamPredictor,
    tasks: Sequence[SegmentTask],
    images: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    overlays: bool = True,
    progress: bool = True,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_score: float = MIN_SCORE,
    ranks: Ranks | None = None,
) -> SegmentSummary:
    """Find every instance of every task in ``images``; write COCO results, overlays and a summary.

    Args:
        predictor: holds the SAM and the tasks' adapters.
        tasks: the categories (ids 1, 2, ... in this order).
        images: image files; their order fixes the image ids.
        out: output directory (see the module docstring).
        overlays: write a PNG overlay per image.
        progress: show a progress bar.
        max_pixels: skip (and count) images of more pixels than this, read from the header before any
            pixel is decoded; ``None``: no limit but Pillow's decompression-bomb check.
        min_score: keep (in the results) and draw only masks of at least this ``score``; 0 keeps all.
        ranks: under a sharded launch, this process segments image ids ``rank + 1, rank + 1 + world, ...``
            (writing their ``per_image`` files and overlays under its ``out``); the main process gathers
            every rank's entries through ``torch.distributed`` and writes the merged ``results.json``,
            ``images.json`` and ``summary.json``, equal to a one-process run's.

    Returns:
        The merged :class:`SegmentSummary` (on every rank).
    """
    if not tasks:
        raise ValueError("segment_images needs at least one task")
    ranks, out = ranks or Ranks(), Path(out)
    signature = [{**task.signature(), "min_score": min_score} for task in tasks]
    signature = json.loads(json.dumps(signature))  # as stored (lists, not tuples)
    ranks.agree([os.fspath(path) for path in images], "images")
    mine = [(image_id, Path(path)) for image_id, path in enumerate(images, 1) if ranks.owns(image_id - 1)]
    settings = _ShardSettings(out, signature, overlays, max_pixels, min_score, progress)
    shard = ranks.together(lambda: _segment_shard(predictor, tasks, mine, settings, ranks.rank))
    shards = ranks.gather(shard)
    summary = merged_summary(shards, len(images), {t.name: t.generator.prompts for t in tasks}, ranks.world)
    if ranks.is_main:
        _write_results(out, {i: e for s in shards for i, e in s.entries.items()}, tasks, summary)
    return summary


@dataclass(frozen=True)
class _ShardSettings:
    """What :func:`_segment_shard` needs of a :func:`segment_images` call besides the images."""

    out: Path
    signature: list[dict[str, Any]]
    overlays: bool
    max_pixels: int | None
    min_score: float
    progress: bool


def _segment_shard(
    predictor: CustomSamPredictor,
    tasks: Sequence[SegmentTask],
    mine: Sequence[tuple[int, Path]],
    settings: _ShardSettings,
    rank: int = 0,
) -> ShardOutcome:
    """Segment (or resume) this rank's ``(image id, path)`` pairs, each read ahead on a background
    thread; per-image entries are written as they finish."""
    out, shard = settings.out, ShardOutcome(rank=rank)
    reader = functools.partial(_read, out=out, signature=settings.signature, max_pixels=settings.max_pixels)
    bar = progress_bar(mine, desc="segmenting", unit="img", disable=not settings.progress)
    for (image_id, path), image in zip(bar, read_ahead(mine, reader), strict=True):
        if image.resumed is not None:
            shard.add(image_id, image.resumed)
            continue
        start = time.perf_counter()
        try:
            overlay = out / "overlays" / _overlay_name(image_id, path) if settings.overlays else None
            entry = _segment_file(predictor, tasks, image, overlay, settings.min_score)
        except DataError as exc:
            shard.failed[image_id] = (os.fspath(path), first_line(exc))
            continue
        entry.update(sha256=image.digest, tasks=settings.signature)
        atomic_write_text(_record_file(out, image_id), json.dumps(entry))
        shard.add(image_id, entry, time.perf_counter() - start)
    return shard


def _segment_file(
    predictor: CustomSamPredictor,
    tasks: Sequence[SegmentTask],
    image: ReadImage,
    overlay: Path | None,
    min_score: float = MIN_SCORE,
) -> dict[str, Any]:
    """One image's per-image entry (``file_name``, ``height``, ``width`` and ``masks``: one list of
    records per task, those scoring at least ``min_score``), its overlay written to ``overlay`` unless
    ``None``.

    Raises:
        DataError: the image could not be read (:attr:`ReadImage.pixels` re-raises why), or cannot be
            resized to SAM's input (names the file and the image's shape).
    """
    pixels = image.require()
    try:
        found = [_segment_one(predictor, task, pixels, min_score) for task in tasks]
    except ImageError as exc:
        raise DataError(image.path, f"cannot be segmented: {first_line(exc)}") from exc
    if overlay is not None:
        _write_overlay(overlay, pixels, found, [task.name for task in tasks])
    return {
        "file_name": os.fspath(image.path),
        "height": pixels.shape[0],
        "width": pixels.shape[1],
        "masks": found,
    }


def _record_file(out: Path, image_id: int) -> Path:
    """Where image ``image_id``'s per-image entry is kept (what makes a run resumable)."""
    return out / "per_image" / f"{image_id:06d}.json"


def _read(
    item: tuple[int, Path], *, out: Path, signature: list[dict[str, Any]], max_pixels: int | None
) -> ReadImage:
    """Read one image for :func:`segment_images` (on the reader thread): its digest, then either the
    entry an earlier run finished for the same content and settings, or its pixels."""
    image_id, path = item
    try:
        digest = _file_digest(path)
        resumed = _finished(_record_file(out, image_id), path, digest, signature)
        if resumed is not None:
            return ReadImage(path, digest, resumed=resumed)
        return ReadImage(path, digest, pixels=load_image(path, max_pixels=max_pixels))
    except DataError as exc:
        return ReadImage(path, error=exc)


def _file_digest(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of an image file's bytes (what resuming is keyed by); :class:`DataError` if unreadable."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror or exc})") from exc


def _overlay_name(image_id: int, path: str | os.PathLike[str]) -> str:
    """``000012_<stem>.png``, the stem cut to 100 bytes of UTF-8 so that the name stays within the file
    system's 255 bytes whatever the image's name."""
    stem = os.fsencode(Path(path).stem)[:100].decode("utf-8", "ignore")
    return f"{image_id:06d}_{stem}.png"


def _segment_one(
    predictor: CustomSamPredictor, task: SegmentTask, image: np.ndarray, min_score: float = MIN_SCORE
) -> list[dict[str, Any]]:
    """The task's masks in one image scoring at least ``min_score``, as JSON-ready records (COCO RLE,
    best first)."""
    with predictor.use_adapter(task.adapter_name):
        records = [r for r in task.generator.generate(image) if r["score"] >= min_score]
    return [
        {
            "segmentation": to_coco_rle(r["segmentation"]),
            "bbox": [float(v) for v in r["bbox"]],
            "area": int(r["area"]),
            "score": r["score"],
            "predicted_iou": r["predicted_iou"],
            "similarity": r["similarity"],
            "point_coords": r["point_coords"],
        }
        for r in records
    ]


def _digest_state(adapter: PromptAdapter) -> str:
    """A digest of an in-memory adapter's weights (one loaded from files has ``weights_sha256``)."""
    digest = hashlib.blake2b(digest_size=16)
    update_with_state(digest, adapter.state_dict(), values=lambda tensor: tensor.float())
    return digest.hexdigest()


def to_coco_rle(segmentation: np.ndarray | dict[str, Any]) -> dict[str, Any]:
    """A mask (``H x W`` bool, or an RLE from ``AdapterMaskGenerator``) as COCO's compressed RLE with a
    ``str`` counts field (JSON-ready)."""
    if isinstance(segmentation, dict):
        if isinstance(segmentation["counts"], str):
            return segmentation
        h, w = segmentation["size"]
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:
        rle = rle_encode(segmentation)
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _finished(
    record_file: Path, path: Path, digest: str, signature: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """This image's stored results if a run wrote them for the same file name and content (``digest``,
    the SHA-256 of its bytes) with the same tasks and settings, else ``None``."""
    try:
        entry = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    current = isinstance(entry, dict) and entry.get("file_name") == os.fspath(path)
    return entry if current and entry.get("sha256") == digest and entry.get("tasks") == signature else None


def overlay_image(image: np.ndarray, found: list[list[dict[str, Any]]], names: Sequence[str]) -> np.ndarray:
    """The image with every mask of ``found`` (one list of records per category, named by ``names``)
    filled (alpha 0.45) and outlined in its own colour (:data:`PALETTE`, in category order, best first),
    largest drawn first so that smaller ones stay visible on top, each labelled ``"<category> <score>"``
    at its box's top-left corner."""
    instances = [(names[c], r) for c, records in enumerate(found) for r in records]
    order = sorted(range(len(instances)), key=lambda i: -int(instances[i][1]["area"]))
    canvas, outlines = image.astype(np.float32), []
    for i in order:
        colour = PALETTE[i % len(PALETTE)]
        mask = mask_utils.decode(instances[i][1]["segmentation"]).astype(bool)
        canvas[mask] = 0.55 * canvas[mask] + 0.45 * np.array(colour, np.float32)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outlines.append((contours, colour))
    drawn = np.ascontiguousarray(canvas.clip(0, 255).astype(np.uint8))
    for contours, colour in outlines:
        cv2.drawContours(drawn, contours, -1, colour, max(1, round(max(image.shape[:2]) / 400)))
    for i in order:
        name, record = instances[i]
        _label(drawn, f"{name} {record['score']:.2f}", record["bbox"], PALETTE[i % len(PALETTE)])
    return drawn


def _label(image: np.ndarray, text: str, bbox: Sequence[float], colour: tuple[int, int, int]) -> None:
    """``text`` on a box of ``colour`` just above the top-left corner of ``bbox`` (XYWH; inside it when
    there is no room above), kept within the image."""
    height, width = image.shape[:2]
    scale = min(1.0, max(0.35, max(height, width) / 1200))
    thickness = max(1, round(scale * 1.5))
    (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = int(min(max(0, bbox[0]), max(0, width - w - 4)))
    top = int(bbox[1]) - h - baseline - 4
    y = top if top >= 0 else int(min(max(0, bbox[1]), max(0, height - h - baseline - 4)))
    cv2.rectangle(image, (x, y), (x + w + 4, y + h + baseline + 4), colour, -1)
    ink = (0, 0, 0) if sum(colour) > 400 else (255, 255, 255)
    cv2.putText(image, text, (x + 2, y + h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)


def _write_overlay(
    path: Path, image: np.ndarray, found: list[list[dict[str, Any]]], names: Sequence[str]
) -> None:
    """:func:`overlay_image` written as a PNG."""
    drawn = overlay_image(image, found, names)
    ok, png = cv2.imencode(".png", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if ok:
        atomic_write(path, lambda tmp: tmp.write_bytes(png.tobytes()))


def _write_results(
    out: Path, finished: dict[int, dict[str, Any]], tasks: Sequence[SegmentTask], summary: SegmentSummary
) -> None:
    """Gather the current results of every finished image (``{image id: per-image entry}``, made now or
    resumed) into ``results.json``, ``images.json`` and ``summary.json``."""
    results, entries = [], []
    for image_id, entry in sorted(finished.items()):
        entries.append({"id": image_id, **{k: entry[k] for k in ("file_name", "height", "width")}})
        for category_id, records in enumerate(entry["masks"], 1):
            results += [{"image_id": image_id, "category_id": category_id, **r} for r in records]
    categories = [{"id": i, "name": t.name} for i, t in enumerate(tasks, 1)]
    atomic_write_text(out / "results.json", json.dumps(results))
    atomic_write_text(
        out / "images.json", json.dumps({"images": entries, "categories": categories}, indent=1)
    )
    atomic_write_text(out / "summary.json", json.dumps(asdict(summary), indent=1))
