"""Training batches as tensors: the drawn instances' prompts, grouped by image and prompt shape.

One step draws ``batch_size`` instances; each gets a random prompt (:class:`PromptSampler`). Prompts on
the same image with the same shape (number of clicks, box or not) form one :class:`PromptGroup`, decoded
in one call on that image's embedding. Groups come in a fixed order, and the PMM's jittered start points
are drawn here too, so a step's randomness all comes from its one generator.

Frames: points, boxes and contours are XY in SAM's input frame; targets are in the padded low-res frame.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..base.interface import ImageFeatures
from ..prompts.sampling import Prompt, PromptSampler
from .training_set import TrainingItem, TrainingSet


@dataclass(frozen=True)
class PromptGroup:
    """``B`` prompts on one image, as tensors on the training device.

    Attributes:
        image_path: the image (named in messages).
        instance_ids: the ``B`` instances prompted.
        embedding: the image's features (:class:`~samplm.base.interface.ImageFeatures`: a
            ``1 x 256 x h x w`` embedding, plus SAM 2's high-resolution maps).
        point_coords: ``B x N x 2`` clicks, or ``None``; point_labels: ``B x N`` (1 positive, 0 negative).
        boxes: ``B x 4`` XYXY boxes, or ``None``.
        targets: ``B x 1 x L x L`` ground truth in {0, 1} (``L`` = 4 x the embedding side).
        contours: ``B x K x 2`` ground-truth contour points, or ``None`` (no PMM).
        pmm_starts: ``B x K x 2`` the contours jittered: where the PMM starts, or ``None``.
    """

    image_path: Path
    instance_ids: tuple[str, ...]
    embedding: ImageFeatures
    point_coords: Tensor | None
    point_labels: Tensor | None
    boxes: Tensor | None
    targets: Tensor
    contours: Tensor | None = None
    pmm_starts: Tensor | None = None

    def __len__(self) -> int:
        return len(self.targets)


def build_batch(
    data: TrainingSet,
    items: list[TrainingItem],
    rng: np.random.Generator,
    sampler: PromptSampler,
    *,
    device: torch.device,
    pmm_jitter: float | None = None,
) -> list[PromptGroup]:
    """Sample a prompt for each item and group them; ``pmm_jitter`` (std in feature cells) adds the PMM's
    contours and jittered start points (``None``: no PMM)."""
    groups: dict[tuple, list[tuple[TrainingItem, Prompt]]] = defaultdict(list)
    for item in items:
        prompt = sampler.sample(item.target, rng, data.img_size)
        shape = (
            str(item.image_path),
            None if prompt.points is None else len(prompt.points),
            prompt.box is not None,
        )
        groups[shape].append((item, prompt))
    return [
        _group(data, members, rng, device, pmm_jitter)
        for _, members in sorted(groups.items(), key=lambda kv: str(kv[0]))
    ]


def _stack(values: list[np.ndarray], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.as_tensor(np.stack(values), dtype=dtype, device=device)


def _group(
    data: TrainingSet,
    members: list[tuple[TrainingItem, Prompt]],
    rng: np.random.Generator,
    device: torch.device,
    pmm_jitter: float | None,
) -> PromptGroup:
    first, prompt = members[0]
    clicks = prompt.points is not None
    contours = starts = None
    if pmm_jitter is not None:
        contours = _stack([m.target.contour for m, _ in members], torch.float32, device)
        noise = rng.normal(0.0, pmm_jitter * data.cell, tuple(contours.shape))
        starts = (contours + torch.as_tensor(noise, dtype=torch.float32, device=device)).clamp(
            0, data.img_size
        )
    return PromptGroup(
        image_path=first.image_path,
        instance_ids=tuple(m.instance_id for m, _ in members),
        embedding=data.embedding(first).to(device),
        point_coords=_stack([p.points for _, p in members], torch.float32, device) if clicks else None,
        point_labels=_stack([p.labels for _, p in members], torch.int64, device) if clicks else None,
        boxes=_stack([p.box for _, p in members], torch.float32, device) if prompt.box is not None else None,
        targets=_stack([m.target.low_res for m, _ in members], torch.float32, device)[:, None],
        contours=contours,
        pmm_starts=starts,
    )


def describe_batch(batch: list[PromptGroup]) -> str:
    """The images of a batch and the instances prompted on each, for messages: ``"a.png (instances 0,
    1); b.png (instance 3)"``."""
    instances: dict[str, list[str]] = defaultdict(list)
    for group in batch:
        instances[str(group.image_path)].extend(group.instance_ids)
    return "; ".join(
        f"{image} (instance{'s' if len(ids) > 1 else ''} {', '.join(ids)})"
        for image, ids in instances.items()
    )
