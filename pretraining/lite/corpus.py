"""The ``samplm_lite`` pretraining corpus: views of real photos with region hierarchies, and synthetic
panels composited onto real photos with exact wholes and parts.

A *view* is one 512 px image as SAM sees it (longest side resized, padded bottom-right). Each view
stores the trunk's features (float16; the trunk runs once per view: it is frozen, or only its last
stages train, from the cached stride-16 map) and
its targets at the decoder's low resolution (``4 x grid`` = 128 px per side): a region hierarchy
(:mod:`.regions`) for photos, exact object masks for composites.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from samplm.base.lite import LITE_GRID, LITE_IMAGE_SIZE
from samplm.base.parts import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from samplm.data.images import load_image
from samplm.data.synthetic import PhotoBackgrounds
from samplm.utils.progress import progress_bar

from ..scenes import make_scene
from .feature_cut import feature_objects
from .regions import Hierarchy, build_hierarchy

LOW_RES = 4 * LITE_GRID
STRIDE = LITE_IMAGE_SIZE // LOW_RES  # input pixels per low-res pixel


@dataclass
class SceneTarget:
    """An exact object of a composite at low resolution: its whole and its parts (bool masks)."""

    whole: np.ndarray
    parts: list[np.ndarray] = field(default_factory=list)


@dataclass
class View:
    """One training view.

    Attributes:
        features: the trunk's stride 8/16/32 maps of the padded input (float16, batch dim dropped).
        size: ``(h, w)`` of the image inside the padded low-res frame.
        hierarchy: pseudo-mask hierarchy (photos), or ``None``.
        objects: exact objects (composites), possibly empty.
        cut: ``h x w`` object label map of the feature cut (:mod:`.feature_cut`; photos built with
            ``object_k``), or ``None``.
        answers: the rule that picks a click's three regions of ``hierarchy``
            (:data:`.prompts.ANSWER_RULES`: ``area``, ``persistent``, ``anchored``,
            ``persistent-ends`` or ``persistent-part``).
    """

    features: list[torch.Tensor]
    size: tuple[int, int]
    hierarchy: Hierarchy | None
    objects: list[SceneTarget]
    cut: np.ndarray | None = None
    answers: str = "area"


def resize_view(image: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 -> the image resized so its longest side is 512 (SAM's ResizeLongestSide)."""
    return ResizeLongestSide(LITE_IMAGE_SIZE).apply_image(image)


def to_input(resized: np.ndarray) -> torch.Tensor:
    """A resized view -> ``1 x 3 x 512 x 512`` normalised and padded bottom-right, as ``Sam.preprocess``."""
    x = (torch.as_tensor(resized).permute(2, 0, 1).float() - torch.tensor(SAM_PIXEL_MEAN)[:, None, None]) / (
        torch.tensor(SAM_PIXEL_STD)[:, None, None]
    )
    h, w = x.shape[-2:]
    return torch.nn.functional.pad(x, (0, LITE_IMAGE_SIZE - w, 0, LITE_IMAGE_SIZE - h))[None]


def low_res_size(resized: np.ndarray) -> tuple[int, int]:
    return (max(1, resized.shape[0] // STRIDE), max(1, resized.shape[1] // STRIDE))


def trunk_features(trunk: torch.nn.Module, resized: np.ndarray) -> list[torch.Tensor]:
    """The trunk's stride 8/16/32 maps of a resized view, run where the trunk is, kept on the CPU as
    float16 (``C x h x w`` each)."""
    device = next(trunk.parameters()).device
    return [f[0].half().cpu() for f in trunk(to_input(resized).to(device))]


def image_cells(features: list[torch.Tensor], resized: np.ndarray) -> np.ndarray:
    """The stride-16 map of :func:`trunk_features` cut to the image (padding dropped): ``C x gh x gw``."""
    grid = ((resized.shape[0] + 15) // 16, (resized.shape[1] + 15) // 16)
    return features[1][:, : grid[0], : grid[1]].float().numpy()


def to_low_res(mask: np.ndarray, size: tuple[int, int] = (LOW_RES, LOW_RES)) -> np.ndarray:
    """A bool mask at the decoder's resolution ``size`` (``h, w``): area-averaged, then >= 0.5."""
    return cv2.resize(mask.astype(np.float32), size[::-1], interpolation=cv2.INTER_AREA) >= 0.5


def view_labels(
    resized: np.ndarray, stride16: np.ndarray, size: tuple[int, int], object_k: int
) -> tuple[Hierarchy, np.ndarray | None]:
    """A photo view's pseudo-labels: its region hierarchy and, with ``object_k``, its feature cut.

    Args:
        resized: the view (``h x w x 3`` uint8, longest side 512).
        stride16: the trunk's stride-16 map cut to the image (:func:`image_cells`, ``C x gh x gw``).
        size: ``(h, w)`` of the view at the decoder's low resolution.
        object_k: feature-cut clusters (0: no cut).
    """
    hierarchy = build_hierarchy(resized, stride16, size)
    cut = feature_objects(stride16, hierarchy.leaves, object_k) if object_k else None
    return hierarchy, cut


def map_in_processes(fn: Callable, jobs: Iterable[tuple], workers: int, desc: str, progress: bool) -> list:
    """``[fn(*job) for job in jobs]``, in ``workers`` spawned processes when ``workers > 1`` (results in
    order, identical to one process: ``fn`` is deterministic). In one process the jobs are drawn one at
    a time; a pool draws them all first."""

    def done(results: Iterator) -> list:
        return list(progress_bar(results, desc=desc, disable=not progress))

    if workers <= 1:
        return done(fn(*job) for job in jobs)
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return done(pool.map(fn, *zip(*jobs, strict=True), chunksize=4))


def _photo_views(
    trunk: torch.nn.Module,
    photos: list[Path],
    rng: np.random.Generator,
    crops: int,
    object_k: int,
    answers: str,
    workers: int,
    progress: bool,
) -> list[View]:
    features, sizes = [], []

    def label_jobs() -> Iterator[tuple]:
        """One job per view; the trunk runs here and its features stay here (only arrays travel)."""
        for path in photos:
            for image in photo_views(load_image(path), rng, crops):
                resized = resize_view(image)
                features.append(trunk_features(trunk, resized))
                sizes.append(low_res_size(resized))
                yield resized, image_cells(features[-1], resized), sizes[-1], object_k

    labels = map_in_processes(view_labels, label_jobs(), workers, "photo views", progress)
    return [
        View(f, size, hierarchy, [], cut, answers)
        for f, size, (hierarchy, cut) in zip(features, sizes, labels, strict=True)
    ]


def _scene_view(trunk: torch.nn.Module, rng: np.random.Generator, photos: PhotoBackgrounds) -> View:
    image, scene = make_scene(rng, LITE_IMAGE_SIZE, photos)
    features = trunk_features(trunk, image)
    objects = []
    for obj in scene:
        whole = to_low_res(obj.whole)
        parts = [p for p in (to_low_res(p) for p in obj.parts) if p.sum() >= 4]
        if whole.sum() >= 16:
            objects.append(SceneTarget(whole, parts))
    return View(features, (LOW_RES, LOW_RES), None, objects)


def zoom_crop(
    image: np.ndarray, rng: np.random.Generator, low: float = 0.4, high: float = 0.75
) -> np.ndarray:
    """A random crop of ``low``-``high`` of each side (close-ups of a photo's content)."""
    h, w = image.shape[:2]
    f = rng.uniform(low, high)
    ch, cw = max(16, int(h * f)), max(16, int(w * f))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return image[y : y + ch, x : x + cw]


def photo_views(image: np.ndarray, rng: np.random.Generator, crops: int) -> list[np.ndarray]:
    """The full photo and ``crops`` zoomed crops, each flipped left-right with probability 0.5."""
    views = [image] + [zoom_crop(image, rng) for _ in range(crops)]
    return [np.ascontiguousarray(v[:, ::-1]) if rng.random() < 0.5 else v for v in views]


@torch.no_grad()
def build_corpus(
    trunk: torch.nn.Module,
    photos: list[Path],
    seed: int,
    crops: int = 2,
    scenes: int = 150,
    object_k: int = 0,
    progress: bool = True,
    workers: int = 0,
    answers: str = "area",
) -> list[View]:
    """Views of every photo (full + ``crops`` zoomed crops) and ``scenes`` synthetic composites; with
    ``object_k``, each photo view also holds its feature cut into ``object_k`` clusters; a click on a
    photo view is answered by the regions that rule ``answers`` picks. The trunk runs
    here (on its device); the pseudo-labels are built in ``workers`` processes (0 or 1: in this one;
    the corpus is the same either way)."""
    rng = np.random.default_rng(seed)
    trunk.eval()
    views = _photo_views(trunk, photos, rng, crops, object_k, answers, workers, progress)
    backgrounds = PhotoBackgrounds(photos, LITE_IMAGE_SIZE)
    for _ in progress_bar(range(scenes), desc="composites", disable=not progress):
        views.append(_scene_view(trunk, rng, backgrounds))
    return views
