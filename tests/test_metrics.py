"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samplm.eval.metrics import boundary_band, boundary_iou, boundary_width, coco_mask_ap, iou, mean_by_class


def _mask(shape, *slices):
    mask = np.zeros(shape, bool)
    for sl in slices:
        mask[sl] = True
    return mask


def test_iou_hand_cases():
    a = _mask((4, 4), np.s_[0:2, 0:2])
    b = _mask((4, 4), np.s_[0:2, 1:3])
    assert iou(a, b) == pytest.approx(2 / 6)
    assert iou(a, a) == 1.0
    empty = np.zeros((4, 4), bool)
    assert iou(empty, empty) == 1.0 and iou(a, empty) == 0.0 and iou(empty, a) == 0.0
    one = _mask((4, 4), np.s_[3, 3])
    assert iou(one, one) == 1.0 and iou(one, _mask((4, 4), np.s_[3, 2])) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        iou(a, np.zeros((3, 3), bool))


def test_boundary_band_and_width():
    assert boundary_width(300, 400) == 10  # 0.02 * 500
    assert boundary_width(10, 10) == 1  # 0.28 rounds to 0 -> at least 1
    square = _mask((10, 10), np.s_[2:8, 2:8])
    band = boundary_band(square, 1)
    assert band.sum() == 36 - 16  # a 6x6 square minus its 4x4 interior
    full = np.ones((5, 5), bool)
    assert boundary_band(full, 1).sum() == 25 - 9  # the image border counts as outside


def test_boundary_iou_hand_cases():
    gt = _mask((10, 10), np.s_[2:8, 2:8])
    assert boundary_iou(gt, gt) == 1.0
    shifted = _mask((10, 10), np.s_[2:8, 3:9])
    # width 1: gt band = 20 px ring; shifted ring overlaps it on 10 px (top/bottom rows 3..7 -> 5+5)
    inter = (boundary_band(gt, 1) & boundary_band(shifted, 1)).sum()
    union = (boundary_band(gt, 1) | boundary_band(shifted, 1)).sum()
    assert boundary_iou(shifted, gt) == pytest.approx(inter / union)
    assert inter == 10 and union == 30
    empty = np.zeros((10, 10), bool)
    assert boundary_iou(empty, empty) == 1.0 and boundary_iou(empty, gt) == 0.0
    pixel = _mask((10, 10), np.s_[5, 5])
    assert boundary_iou(pixel, pixel) == 1.0


def test_boundary_iou_is_stricter_than_iou_for_large_objects():
    gt = _mask((200, 200), np.s_[20:180, 20:180])
    pred = _mask((200, 200), np.s_[24:184, 24:184])
    assert boundary_iou(pred, gt) < iou(pred, gt)


def test_mean_by_class_is_per_instance_overall():
    result = mean_by_class([("a", 1.0), ("a", 0.0), ("b", 1.0)])
    assert result == {"a": 0.5, "b": 1.0, "all": pytest.approx(2 / 3)}
    assert math.isnan(mean_by_class([])["all"])


def test_coco_mask_ap():
    pytest.importorskip("pycocotools")
    gt = [_mask((20, 20), np.s_[2:12, 2:12]), _mask((20, 20), np.s_[5:15, 5:15])]
    perfect = coco_mask_ap(gt, gt, [0.9, 0.8], ["x", "x"])
    assert perfect["AP"] == pytest.approx(1.0) and perfect["AP50"] == pytest.approx(1.0)
    wrong = [_mask((20, 20), np.s_[12:20, 12:20]), gt[1]]
    half = coco_mask_ap(gt, wrong, [0.9, 0.8], ["x", "x"])
    assert 0.0 < half["AP"] < 1.0


def test_coco_mask_ap_takes_rles_as_it_takes_masks():
    from samplm.utils.geometry import rle_decode, rle_encode

    gt = [_mask((30, 20), np.s_[2:12, 2:12]), _mask((30, 20), np.s_[5:25, 5:15])]
    pred = [_mask((30, 20), np.s_[3:12, 2:12]), _mask((30, 20), np.s_[15:30, 5:15])]
    from_masks = coco_mask_ap(gt, pred, [0.9, 0.8], ["x", "y"])
    from_rles = coco_mask_ap(
        [rle_encode(m) for m in gt], [rle_encode(m) for m in pred], [0.9, 0.8], ["x", "y"]
    )
    assert from_rles == from_masks and 0.0 < from_masks["AP"] < 1.0
    assert rle_encode(gt[1])["size"] == [30, 20]
    for mask in gt + pred:  # the RLE holds the mask itself (decoded by samplm's own reader)
        np.testing.assert_array_equal(rle_decode(rle_encode(mask), 30, 20), mask)
