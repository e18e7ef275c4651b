"""The centre click on a low-resolution target: one helper for training validation, SAM-F fitting and
pretraining checks.

Frames: ``low_res_mask`` is a padded low-res target (``L x L``, ``L`` = 4 x the embedding side, as in
:mod:`samplm.train.targets`); the click is returned and decoded in SAM's input frame, at the middle of the
low-res pixel that :func:`samplm.utils.geometry.center_point` picks (``(x + 0.5) * img_size / L``).
Evaluation at the original resolution (:mod:`samplm.eval`) clicks ``center_point`` of the full-size mask
instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..adapter import PromptLearningModule
from ..base.bases import as_base
from ..base.interface import ImageFeatures
from ..decoder.decode import DecoderOutput, as_features, decode_prompts
from ..utils.geometry import center_point


def center_click(low_res_mask: np.ndarray, img_size: int) -> tuple[float, float]:
    """``(x, y)`` in the input frame of ``low_res_mask``'s centre pixel (``L x L`` bool; the centre of its
    deepest pixels, :func:`~samplm.utils.geometry.center_point`)."""
    x, y = center_point(low_res_mask)
    scale = img_size / low_res_mask.shape[0]
    return ((x + 0.5) * scale, (y + 0.5) * scale)


def decode_center_click(
    sam: Any,
    image_embedding: Tensor | ImageFeatures,
    low_res_mask: np.ndarray,
    *,
    plm: PromptLearningModule | None = None,
    multimask_output: bool = True,
) -> DecoderOutput:
    """Decode one positive click at the centre of ``low_res_mask`` on ``image_embedding``
    (``1 x 256 x h x w``, or the base's :class:`ImageFeatures`) with the base ``sam`` (a ``Sam``, a ``sam2``
    model or a base): outputs for a batch of one prompt (``1 x C x L x L`` logits)."""
    x, y = center_click(low_res_mask, as_base(sam).image_size)
    device = as_features(image_embedding).embedding.device
    return decode_prompts(
        sam,
        image_embedding,
        point_coords=torch.tensor([[[x, y]]], dtype=torch.float32, device=device),
        point_labels=torch.ones(1, 1, dtype=torch.int64, device=device),
        multimask_output=multimask_output,
        plm=plm,
    )
