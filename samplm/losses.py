"""Mask losses and IoU shared by training, evaluation (SAM-F) and pretraining: focal, dice, mask IoU.

Shapes: ``logits`` and ``targets`` are ``... x H x W`` (targets in {0, 1}); results are ``...``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Per-mask focal loss, mean over pixels. ``logits``/``targets``: ``... x H x W`` -> ``...``."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: Tensor, targets: Tensor, eps: float = 1.0) -> Tensor:
    """Per-mask soft dice loss. ``... x H x W`` -> ``...``."""
    prob = logits.sigmoid().flatten(-2)
    targets = targets.flatten(-2)
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return 1 - (numerator + eps) / (denominator + eps)


def mask_iou(logits: Tensor, targets: Tensor) -> Tensor:
    """IoU of the thresholded masks (logits > 0) with binary targets. ``... x H x W`` -> ``...``;
    two empty masks have IoU 1."""
    pred = (logits > 0).flatten(-2)
    gt = targets.flatten(-2) > 0.5
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
