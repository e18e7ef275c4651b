"""``TrainingSet``: instances paired with their cached image embeddings and precomputed targets."""

from __future__ import annotations

import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..base.bases import as_base
from ..base.interface import ImageFeatures
from ..cache.embeddings import EmbeddingCache
from ..data import InstanceDataset
from ..errors import DataError, SkippedDataWarning
from ..utils.progress import progress_bar
from .targets import InstanceTarget, make_target


@dataclass(frozen=True)
class TrainingItem:
    """One trainable instance: which image, its expected size key, and its target."""

    image_path: Path
    expected_size: tuple[int, int] | None
    target: InstanceTarget
    instance_id: str


class TrainingSet:
    """Targets for every usable instance, and embeddings read from the cache on demand.

    Args:
        dataset: the instances.
        cache: an embedding cache holding every image of ``dataset`` (see ``samplm embed``).
        sam: the base the cache belongs to (a ``Sam``, a ``sam2`` model or a base; only its sizes are used,
            the image encoder is not needed).
        num_points: contour points per instance for the PMM (``None``: no contours).
        memory_images: how many decoded embeddings to keep in memory (LRU).
    """

    def __init__(
        self,
        dataset: InstanceDataset,
        cache: EmbeddingCache,
        sam: Any,
        *,
        num_points: int | None = None,
        memory_images: int = 64,
        progress: bool = True,
        description: str = "preparing targets",
    ) -> None:
        self.cache = cache
        base = as_base(sam)
        self.img_size = base.image_size
        self.grid = int(base.embedding_size[0])  # embedding side h (= w)
        self.low_res = 4 * self.grid  # side of the decoder's low-res logits
        self.cell = self.img_size / self.grid  # input-frame pixels per embedding cell
        self.items: list[TrainingItem] = []
        self.skipped: Counter[str] = Counter()
        self._memory: OrderedDict[tuple[str, tuple[int, int] | None], ImageFeatures] = OrderedDict()
        self._memory_images = memory_images
        groups = dataset.by_image()
        missing = [str(p) for p, insts in groups.items() if not cache.contains(p, insts[0].image_size)]
        if missing:
            raise DataError(
                missing[0],
                f"{len(missing)} image(s) have no cached embedding in {cache.directory}; "
                "run `samplm embed` first",
            )
        for image_path, instances in progress_bar(
            groups.items(), desc=description, unit="img", disable=not progress
        ):
            expected = instances[0].image_size
            entry = cache.get(image_path, expected)
            for inst in instances:
                mask = inst.mask(*entry.original_size)
                target = make_target(mask, entry.input_size, self.img_size, self.low_res, num_points)
                if target is None:
                    self.skipped["mask vanishes at the training resolution"] += 1
                    continue
                self.items.append(TrainingItem(Path(image_path), expected, target, inst.instance_id))
        if self.skipped:
            warnings.warn(
                f"{dataset.source}: skipped {sum(self.skipped.values())} instance(s): {dict(self.skipped)}",
                SkippedDataWarning,
                stacklevel=2,
            )
        if not self.items:
            raise DataError(dataset.source, "no usable instances to train on")

    def __len__(self) -> int:
        return len(self.items)

    def embedding(self, item: TrainingItem) -> ImageFeatures:
        """The item's image features at float32: the ``1 x 256 x h x w`` embedding (and SAM 2's
        high-resolution maps), LRU-cached in memory."""
        key = (str(item.image_path), item.expected_size)
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        tensor = self.cache.get(item.image_path, item.expected_size).features.to(torch.float32)
        self._memory[key] = tensor
        if len(self._memory) > self._memory_images:
            self._memory.popitem(last=False)
        return tensor
