"""PMM polygon refinement: identity offsets keep a square, constant offsets shift it, API errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from samplm import AdapterConfig, CustomSamPredictor, PMMConfig, PromptAdapter, SamplmError
from samplm.adapter import PointMatchingModule
from samplm.refine.polygons import refine_masks


def _pmm(offset_x: float = 0.0, num_points: int = 4) -> PointMatchingModule:
    pmm = PointMatchingModule(num_points=num_points).eval()
    with torch.no_grad():
        last = pmm.head[-1]
        last.weight.zero_()
        # output = tanh(bias / max_offset) * max_offset
        last.bias.copy_(torch.tensor([pmm.max_offset * math.atanh(offset_x / pmm.max_offset), 0.0]))
    return pmm


def _square():
    mask = np.zeros((64, 96), bool)
    mask[10:34, 20:44] = True  # 24 x 24: the 4 equal-arc points are its corners
    return mask


def _refine(pmm, masks, input_size=(64, 96)):
    features = torch.randn(1, 256, 8, 8)
    return refine_masks(pmm, masks, features, original_size=(64, 96), input_size=input_size, image_size=128)


def test_zero_offsets_keep_a_square():
    (result,) = _refine(_pmm(0.0), _square()[None])
    assert np.array_equal(result.mask, _square())
    np.testing.assert_allclose(result.polygon, result.initial_polygons[0], atol=1e-5)
    assert result.polygon.shape == (4, 2)


def test_constant_offsets_shift_the_polygon():
    (result,) = _refine(_pmm(8.0), _square()[None], input_size=(64, 96))  # scale 1: 8 input px = 8 px
    np.testing.assert_allclose(result.polygon - result.initial_polygons[0], [[8.0, 0.0]] * 4, atol=1e-4)
    expected = np.zeros((64, 96), bool)
    expected[10:34, 28:52] = True
    assert np.array_equal(result.mask, expected)
    (half,) = _refine(_pmm(8.0), _square()[None], input_size=(32, 48))  # input frame is half size
    np.testing.assert_allclose(half.polygon - half.initial_polygons[0], [[16.0, 0.0]] * 4, atol=1e-4)


def test_parts_are_refined_separately_and_small_parts_kept():
    mask = _square()
    mask[40:64, 60:84] = True  # a second 24 x 24 square
    mask[0, 0] = True  # a stray pixel: kept as is
    (result,) = _refine(_pmm(0.0), mask[None])
    assert len(result.polygons) == 2
    assert np.array_equal(result.mask, mask)


def test_empty_mask_and_shape_errors():
    empty = np.zeros((1, 64, 96), bool)
    (result,) = _refine(_pmm(), empty)
    assert not result.mask.any() and result.polygon.shape == (0, 2) and result.polygons == []
    with pytest.raises(ValueError, match="masks must be"):
        _refine(_pmm(), np.zeros((64, 96), bool))


def test_predict_refined(tiny_sam, image, adapter_factory):
    predictor = CustomSamPredictor(tiny_sam)
    predictor.set_image(image)
    click = {"point_coords": np.array([[60.0, 40.0]]), "point_labels": np.array([1])}
    with pytest.raises(SamplmError, match="active adapter"):
        predictor.predict_refined(**click)
    predictor.load_adapter(adapter_factory("plm-only"))
    with pytest.raises(SamplmError, match="no Point Matching Module"):
        predictor.predict_refined(**click)
    adapter = PromptAdapter(AdapterConfig(task="with-pmm", pmm=PMMConfig(num_points=12)))
    predictor.load_adapter(adapter, activate=True)
    masks, scores, low_res, polygons = predictor.predict_refined(**click)
    plain_masks, plain_scores, _ = predictor.predict(**click)
    assert masks.shape == plain_masks.shape and np.array_equal(scores, plain_scores)
    assert low_res.shape == (3, 32, 32)
    assert len(polygons) == 3 and all(p.shape == (12, 2) for parts in polygons for p in parts)
    assert not tiny_sam.mask_decoder.transformer._forward_hooks  # the capture hook is removed again
