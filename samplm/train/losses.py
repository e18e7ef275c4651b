"""Losses and mask IoU for training, SAM-F fitting and pretraining: focal, dice, SAM's focal + dice +
IoU-head MSE over candidate masks, and the paper's point matching loss (Eq. 4).

Shapes: ``logits`` and ``targets`` are ``... x H x W`` (targets in {0, 1}) unless a function says otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dice_loss", "mask_iou", "point_matching_loss", "segmentation_loss", "sigmoid_focal_loss"]


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


def segmentation_loss(
    logits: Tensor,
    iou_pred: Tensor,
    targets: Tensor,
    *,
    focal_weight: float = 20.0,
    dice_weight: float = 1.0,
    iou_weight: float = 1.0,
    reduce: str = "min",
) -> tuple[Tensor, Tensor, Tensor]:
    """SAM's loss for each of C candidate masks, reduced to the best candidate per prompt.

    Args:
        logits: ``B x C x H x W`` low-res mask logits.
        iou_pred: ``B x C`` IoU-head predictions.
        targets: ``B x 1 x H x W`` ground truth in {0, 1}.
        reduce: ``"min"`` trains the best candidate (SAM's min-over-masks); ``"all"`` trains every
            candidate towards the target (the mean of their losses), so that no output keeps another
            granularity.

    Returns:
        ``(loss B, chosen index B, IoU of the chosen mask B)``: per prompt, the candidate with the
        lowest focal + dice loss is trained (SAM's min-over-masks); its IoU head is regressed to the
        true IoU of every candidate.
    """
    targets = targets.expand_as(logits).to(logits.dtype)
    mask_losses = focal_weight * sigmoid_focal_loss(logits, targets) + dice_weight * dice_loss(
        logits, targets
    )
    true_iou = mask_iou(logits.detach(), targets)
    chosen = mask_losses.argmin(dim=1)
    if reduce == "min":
        best = mask_losses.gather(1, chosen[:, None])[:, 0]
    elif reduce == "all":
        best = mask_losses.mean(dim=1)
    else:
        raise ValueError(f"reduce must be 'min' or 'all', got {reduce!r}")
    iou_loss = F.mse_loss(iou_pred, true_iou, reduction="none").mean(1)
    return best + iou_weight * iou_loss, chosen, true_iou.gather(1, chosen[:, None])[:, 0]


def point_matching_loss(target_points: Tensor, predicted_points: Tensor) -> Tensor:
    """Eq. 4: mean over GT points of the squared distance to the nearest predicted point.

    Args:
        target_points: ``B x K x 2`` GT contour points.
        predicted_points: ``B x K' x 2`` refined points.

    Returns:
        ``B`` losses.
    """
    distances = torch.cdist(target_points, predicted_points).pow(2)  # B x K x K'
    return distances.min(dim=2).values.mean(dim=1)
