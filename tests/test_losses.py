"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
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


def test_segmentation_loss_all_trains_every_candidate():
    torch.manual_seed(0)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    iou_pred = torch.zeros(2, 3)
    loss_min, chosen, _ = segmentation_loss(logits, iou_pred, target, iou_weight=0.0)
    loss_all, chosen_all, _ = segmentation_loss(logits, iou_pred, target, iou_weight=0.0, reduce="all")
    assert torch.equal(chosen, chosen_all) and torch.all(loss_all >= loss_min)
    (grad_min,) = torch.autograd.grad(loss_min.sum(), logits)
    (grad_all,) = torch.autograd.grad(loss_all.sum(), logits)
    touched_min = (grad_min.abs().sum(dim=(2, 3)) > 0).sum(dim=1)
    touched_all = (grad_all.abs().sum(dim=(2, 3)) > 0).sum(dim=1)
    assert touched_min.tolist() == [1, 1]  # min-over-masks trains one candidate per prompt
    assert touched_all.tolist() == [3, 3]  # "all" trains the three
    with pytest.raises(ValueError, match="reduce"):
        segmentation_loss(logits, iou_pred, target, reduce="max")
