"""Centre-click answers on a training set's instances, scored against their targets: what validation, the
score readout's fit and the mask-ranking benchmark read.

Frames and shapes as :func:`samplm.prompts.center_click.decode_center_click`: one positive click at the
centre of each ``L x L`` low-res target, decoded on the instance's cached image features.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..adapter import PromptLearningModule
from ..base.bases import as_base
from ..decoder.decode import DecoderOutput, ImageFeatures
from ..prompts.center_click import decode_center_click
from .losses import mask_iou
from .training_set import TrainingSet


@dataclass(frozen=True)
class CenterClickAnswer:
    """One instance's answer.

    Attributes:
        output: the decoder's (adapter's) ``1 x C x L x L`` logits and ``1 x C`` scores.
        true_iou: ``1 x C``, each output's IoU with the instance's target (thresholded at 0).
        features: the instance's image features, on the base's device.
        target: ``L x L`` float target in {0, 1}, on the base's device.
    """

    output: DecoderOutput
    true_iou: Tensor
    features: ImageFeatures
    target: Tensor


@torch.no_grad()
def center_click_answers(
    sam: Any, data: TrainingSet, plm: PromptLearningModule | None, max_instances: int | None = None
) -> Iterator[CenterClickAnswer]:
    """Decode one centre click per instance of ``data`` (the first ``max_instances``; ``None``: all)
    with the base ``sam`` and ``plm`` (``None``: plain SAM), on the base's device."""
    device = as_base(sam).decoder_parameter().device
    for item in data.items[: max_instances or None]:
        features = data.embedding(item).to(device)
        output = decode_center_click(sam, features, item.target.low_res, plm=plm)
        logits = output.low_res_logits.float()
        target = torch.as_tensor(item.target.low_res, device=device, dtype=torch.float32)
        yield CenterClickAnswer(output, mask_iou(logits, target.expand_as(logits)), features, target)
