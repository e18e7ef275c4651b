"""One training step's losses as a module: the trainable adapter on a frozen SAM.

:class:`StepModel` turns a batch (:mod:`samplm.train.batch`) into its losses; being an ``nn.Module``
whose only parameters are the adapter's, it is what ``accelerate``/DDP wraps to synchronise gradients
(:mod:`samplm.train.distributed`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..adapter import sample_point_features
from ..adapter.prompt_adapter import PromptAdapter
from ..base.bases import as_base
from ..decoder.decode import decode_prompts
from .batch import PromptGroup
from .losses import point_matching_loss, segmentation_loss
from .settings import TrainConfig


def freeze(sam: Any) -> Any:
    """Put the base (a ``Sam``, a ``sam2`` model or a base) in eval mode with no parameter requiring
    gradients; returns its module."""
    module = as_base(sam).module
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


class StepModel(nn.Module):
    """The trainable adapter behind one ``forward`` that turns a batch into its losses.

    Wrapping the loss computation in a module lets ``accelerate``/DDP synchronise gradients; the
    frozen SAM is held outside the module's parameters so it is never broadcast or all-reduced.
    """

    def __init__(self, adapter: PromptAdapter, sam: Any, config: TrainConfig) -> None:
        super().__init__()
        self.adapter = adapter
        object.__setattr__(self, "sam", as_base(sam))
        self.config = config

    def forward(self, batch: list[PromptGroup], cell: float) -> dict[str, Tensor]:
        """Losses of a batch (``cell``: input-frame pixels per embedding cell, the PMM loss unit).

        Each group's ``B`` prompts are decoded on its ``1 x 256 x h x w`` embedding into ``B x C x L x L``
        low-res logits (``C`` = 3 with multimask output, else 1) scored against its ``B x 1 x L x L``
        targets.

        Returns:
            ``loss`` (to minimise), ``seg_loss``, ``pm_loss`` and ``iou`` (of the trained masks), each a
            0-d tensor averaged over the batch's prompts.
        """
        config = self.config
        device = next(self.adapter.parameters()).device
        seg_total = torch.zeros((), device=device)
        pm_total = torch.zeros((), device=device)
        iou_total = torch.zeros((), device=device)
        half = torch.bfloat16 if config.precision == "bf16" else torch.float16
        for group in batch:
            with torch.autocast(device.type, dtype=half, enabled=config.precision != "no"):
                output = decode_prompts(
                    self.sam,
                    group.embedding,
                    point_coords=group.point_coords,
                    point_labels=group.point_labels,
                    boxes=group.boxes,
                    multimask_output=config.multimask != "single",
                    plm=self.adapter.plm,
                    return_image_features=self.adapter.pmm is not None,
                )
            seg, _, iou = segmentation_loss(
                output.low_res_logits.float(),
                output.iou_predictions.float(),
                group.targets,
                focal_weight=config.focal_weight,
                dice_weight=config.dice_weight,
                iou_weight=config.iou_weight,
                reduce="all" if config.multimask == "all" else "min",
            )
            seg_total = seg_total + seg.sum()
            iou_total = iou_total + iou.detach().sum()
            if self.adapter.pmm is not None:
                pm_total = pm_total + self._pmm_loss(output.image_features, group, cell).sum()
        n = sum(len(group) for group in batch)
        loss = (seg_total + config.pm_weight * pm_total) / n
        return {"loss": loss, "seg_loss": seg_total / n, "pm_loss": pm_total / n, "iou": iou_total / n}

    def _pmm_loss(self, features: Tensor, group: PromptGroup, cell: float) -> Tensor:
        """Point matching loss (Eq. 4) in units of embedding cells; ``features``: ``B x 256 x h x w``.

        Returns:
            ``B`` losses, one per prompt.
        """
        starts = group.pmm_starts
        point_features = sample_point_features(features.float(), starts, self.sam.image_size)
        predicted = starts + self.adapter.pmm(point_features)
        return point_matching_loss(group.contours / cell, predicted / cell)
