"""Losses against hand-computed values."""

from __future__ import annotations

import math

import torch

from samplm.train.losses import (
    dice_loss,
    mask_iou,
    point_matching_loss,
    segmentation_loss,
    sigmoid_focal_loss,
)


def test_focal_loss_hand_value():
    logits, targets = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # p = 0.5: ce = ln 2, (1 - p_t)^2 = 0.25, alpha = 0.25
    assert math.isclose(sigmoid_focal_loss(logits, targets).item(), 0.25 * 0.25 * math.log(2), rel_tol=1e-6)


def test_dice_and_iou_hand_values():
    targets = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    perfect = torch.tensor([[20.0, 20.0], [-20.0, -20.0]])
    assert dice_loss(perfect, targets).item() < 1e-6
    half = torch.tensor([[20.0, -20.0], [-20.0, -20.0]])
    assert math.isclose(mask_iou(half, targets).item(), 0.5)
    assert math.isclose(dice_loss(half, targets, eps=0.0).item(), 1 - 2 / 3, rel_tol=1e-6)
    empty = torch.full((2, 2), -5.0)
    assert mask_iou(empty, torch.zeros(2, 2)).item() == 1.0  # empty vs empty


def test_segmentation_loss_picks_best_candidate():
    targets = torch.zeros(1, 1, 4, 4)
    targets[..., :2, :] = 1
    good = targets[:, 0] * 40 - 20  # 1 x H x W
    logits = torch.stack([-good, good, torch.zeros(1, 4, 4)], dim=1)  # B x 3 x H x W
    loss, chosen, iou = segmentation_loss(logits, torch.tensor([[0.0, 1.0, 0.0]]), targets)
    assert chosen.tolist() == [1] and iou.item() == 1.0
    assert loss.item() < 1e-3


def test_point_matching_loss():
    gt = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    pred = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [10.0, 10.0]]])
    # nearest predicted: (0,0)->(0,1): 1 ; (2,0)->(2,0): 0 -> mean 0.5
    assert math.isclose(point_matching_loss(gt, pred).item(), 0.5, rel_tol=1e-6)
