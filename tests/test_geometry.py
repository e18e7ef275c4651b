"""Geometry helpers against hand-computed cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from samplm.utils import geometry as g


def _rect(h=10, w=12, y0=2, y1=6, x0=3, x1=9):
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _assert_on_a_deepest_pixel(mask):
    """``center_point(mask)`` is a pixel of ``mask`` within ``RIDGE_TOLERANCE`` of its largest depth."""
    x, y = g.center_point(mask)
    dist = g.distance_transform(mask)
    assert mask[int(y), int(x)] and dist[int(y), int(x)] >= dist.max() - g.RIDGE_TOLERANCE


def test_boxes():
    assert g.xywh_to_xyxy([3, 2, 6, 4]) == (3.0, 2.0, 9.0, 6.0)
    assert g.mask_to_box(_rect()) == (3.0, 2.0, 9.0, 6.0)
    assert np.array_equal(g.box_to_mask((3, 2, 9, 6), 10, 12), _rect())
    with pytest.raises(ValueError, match="empty"):
        g.mask_to_box(np.zeros((4, 4), bool))


def test_center_point_is_the_centre_of_the_deepest_pixels():
    mask = np.zeros((9, 9), bool)
    mask[1:8, 1:8] = True
    assert g.center_point(mask) == (4.0, 4.0)
    one = np.zeros((5, 5), bool)
    one[3, 1] = True
    assert g.center_point(one) == (1.0, 3.0)
    border = np.zeros((5, 9), bool)
    border[:, :3] = True  # touches the image border: the border counts as outside
    assert g.center_point(border) == (1.0, 2.0)
    plate = np.zeros((300, 400), bool)
    plate[140:194, 181:335] = True  # a wide box: its middle line ties at the deepest distance
    assert g.center_point(plate) == (257.0, 166.0)  # its centre, not the line's left end (207, 166)


def test_center_point_stays_on_the_deepest_pixels_of_any_shape():
    shape = np.zeros((40, 40), bool)
    shape[5:35, 5:12] = True
    shape[28:35, 5:35] = True  # an L: the ridge's centroid falls outside the mask
    _assert_on_a_deepest_pixel(shape)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 20), st.integers(0, 20), st.integers(0, 2**16))
def test_center_point_of_a_box_is_its_middle_and_of_any_mask_a_deepest_pixel(w, h, x0, y0, seed):
    box = np.zeros((64, 64), bool)
    box[y0 : y0 + h, x0 : x0 + w] = True
    x, y = g.center_point(box)
    assert abs(x - (x0 + (w - 1) / 2)) <= 0.5 and abs(y - (y0 + (h - 1) / 2)) <= 0.5
    blobs = np.random.default_rng(seed).random((12, 12)) < 0.5
    blobs = cv2.resize(blobs.astype(np.uint8), (48, 48), interpolation=cv2.INTER_NEAREST).astype(bool)
    if blobs.any():
        _assert_on_a_deepest_pixel(blobs)


def test_sample_points_stay_inside_and_favour_centre():
    mask = np.zeros((41, 41), bool)
    mask[:, :] = True
    rng = np.random.default_rng(0)
    pts = g.sample_points(mask, 4000, rng, center_power=2.0)
    assert mask[pts[:, 1].astype(int), pts[:, 0].astype(int)].all()
    d_centre = np.abs(pts - 20).max(axis=1)
    uniform = g.sample_points(mask, 4000, rng, center_power=0.0)
    assert d_centre.mean() < np.abs(uniform - 20).max(axis=1).mean() - 3
    with pytest.raises(ValueError, match="empty"):
        g.sample_points(np.zeros((3, 3), bool), 1, rng)


def test_square_polygon_rasterises_to_its_pixels():
    square = np.array([[3, 2], [9, 2], [9, 6], [3, 6]], float)
    assert np.array_equal(g.polygons_to_mask([square], 10, 12), _rect())
    assert g.polygons_to_mask([], 4, 4).sum() == 0


def test_contour_round_trip_and_square_stays_square():
    mask = _rect()
    contour = g.outer_contour(mask)
    assert np.array_equal(g.polygons_to_mask([contour], 10, 12), mask)
    corners = g.resample_closed(contour, 4)
    # perimeter through boundary-pixel centres: 2 * (5 + 3) = 16 -> a point every 4 units, starting at
    # OpenCV's first vertex (top-left) and going down the left side first
    assert [tuple(p) for p in corners] == [(3.5, 2.5), (4.5, 5.5), (8.5, 5.5), (7.5, 2.5)]
    one_pixel = np.zeros((5, 5), bool)
    one_pixel[2, 3] = True
    assert np.array_equal(g.polygons_to_mask([g.outer_contour(one_pixel)], 5, 5), one_pixel)


def test_contour_round_trip_random_shapes():
    rng = np.random.default_rng(1)
    for _ in range(50):
        noise = (rng.random((20, 20)) > 0.45).astype(np.uint8)
        _, labels = cv2.connectedComponents(noise, connectivity=8)
        component = labels == 1
        if not component.any():
            continue
        contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        filled = np.zeros((20, 20), np.uint8)
        cv2.drawContours(filled, contours, -1, 1, -1)
        assert np.array_equal(g.polygons_to_mask([g.outer_contour(component)], 20, 20), filled.astype(bool))


def test_resample_closed_equal_arc_length():
    square = np.array([[0, 0], [4, 0], [4, 4], [0, 4]], float)
    pts = g.resample_closed(square, 8)
    expected = [[0, 0], [2, 0], [4, 0], [4, 2], [4, 4], [2, 4], [0, 4], [0, 2]]
    np.testing.assert_allclose(pts, expected)
    steps = np.linalg.norm(np.diff(np.vstack([pts, pts[:1]]), axis=0), axis=1)
    np.testing.assert_allclose(steps, 2.0)


def test_rle_decode_matches_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (30, 41)]:
        mask = rng.random(shape) > 0.6
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert np.array_equal(g.rle_decode(rle), mask)
        assert np.array_equal(g.rle_decode({"size": rle["size"], "counts": rle["counts"].decode()}), mask)
    uncompressed = {"size": [2, 3], "counts": [1, 2, 3]}  # column-major: 1 off, 2 on, 3 off
    assert np.array_equal(g.rle_decode(uncompressed), np.array([[0, 1, 0], [1, 0, 0]], bool))
    with pytest.raises(ValueError, match="sum"):
        g.rle_decode({"size": [2, 3], "counts": [1, 2]})
    with pytest.raises(ValueError, match="does not match"):
        g.rle_decode(uncompressed, 3, 3)
