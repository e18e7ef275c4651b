"""AdapterMaskGenerator: SAM's automatic masks, decoded through the active adapter, from a grid or a prior."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator

from samplm import CustomSamPredictor, UnknownAdapterError
from samplm.errors import PrototypeError
from samplm.prompts.location_prior import PriorSettings, location_prior
from samplm.segment.generator import THRESHOLDS, AdapterMaskGenerator, mask_similarity
from samplm.segment.jobs import to_coco_rle
from samplm.segment.prototype_fitting import fit_prototype

GRID = {"prompts": "grid", "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 96 x 128 image with two yellow boxes, and the mask of both."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), bool)
    mask[10:40, 10:40] = mask[50:80, 70:110] = True
    image[mask] = (220, 180, 40)
    return image, mask


@pytest.fixture(scope="module")
def prototype(sam, scene):
    return fit_prototype(CustomSamPredictor(sam), [scene], task="box")


def _same_records(a: list[dict], b: list[dict]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if not np.array_equal(x["segmentation"], y["segmentation"]):
            return False
        if x["predicted_iou"] != y["predicted_iou"] or x["score"] != y["score"]:
            return False
    return True


# ---------------------------------------------------------------- construction


def test_prompt_source_defaults_and_errors(sam, prototype):
    predictor = CustomSamPredictor(sam)
    with pytest.raises(PrototypeError, match="prompts='prior'"):
        AdapterMaskGenerator(predictor, prompts="prior")
    with pytest.raises(ValueError, match="prompts must be one of"):
        AdapterMaskGenerator(predictor, prompts="clicks")
    grid = AdapterMaskGenerator(predictor)  # auto without a prototype
    prior = AdapterMaskGenerator(predictor, prototype=prototype)  # auto with one
    assert (grid.prompts, grid.best_mask_only) == ("grid", False)
    assert (prior.prompts, prior.best_mask_only) == ("prior", True)
    assert (grid.pred_iou_thresh, grid.stability_score_thresh) == THRESHOLDS["grid"]
    assert (prior.pred_iou_thresh, prior.stability_score_thresh) == THRESHOLDS["prior"]
    scored_grid = AdapterMaskGenerator(predictor, prototype=prototype, prompts="grid", pred_iou_thresh=0.5)
    assert scored_grid.prompts == "grid" and scored_grid.pred_iou_thresh == 0.5
    assert scored_grid.stability_score_thresh == THRESHOLDS["grid"][1]


def test_prototype_of_another_image_encoder_is_refused(sam, tiny_sam, scene):
    foreign = fit_prototype(CustomSamPredictor(tiny_sam), [scene])
    with pytest.raises(PrototypeError, match="another|image encoder"):
        AdapterMaskGenerator(CustomSamPredictor(sam), prototype=foreign)


# ---------------------------------------------------------------- grid prompts


def test_grid_without_adapter_finds_what_sam_finds(sam, scene):
    image, _ = scene
    ours = AdapterMaskGenerator(CustomSamPredictor(sam), **GRID).generate(image)
    theirs = SamAutomaticMaskGenerator(
        sam, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate(image)
    assert len(ours) > 1 and all(r["area"] > 0 for r in ours)
    assert set(ours[0]) == set(theirs[0]) | {"similarity", "score"}
    theirs = [r for r in theirs if r["area"] > 0]  # SAM keeps masks that vanish at full resolution

    def summary(records):  # SAM's output is unordered
        rows = [
            (
                r["segmentation"].tobytes(),
                r["area"],
                r["bbox"],
                r["predicted_iou"],
                r["point_coords"],
                r["crop_box"],
            )
            for r in records
        ]
        return sorted(rows, key=lambda row: (row[0], row[3]))

    assert summary(ours) == summary(theirs)  # the same masks survive, with SAM's own values


def test_grid_records_are_well_formed_and_sorted_by_score(sam, scene):
    image, _ = scene
    records = AdapterMaskGenerator(CustomSamPredictor(sam), **GRID).generate(image)
    assert len(records) > 1
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True)
    for record in records:
        mask = record["segmentation"]
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        assert record["area"] == int(mask.sum())
        assert record["similarity"] is None and record["score"] == record["predicted_iou"]
        assert record["crop_box"] == [0, 0, 128, 96]
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert record["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


def test_grid_scored_by_a_prototype(sam, scene, prototype):
    image, _ = scene
    records = AdapterMaskGenerator(CustomSamPredictor(sam), prototype=prototype, **GRID).generate(image)
    assert records
    for record in records:
        assert -1.0 <= record["similarity"] <= 1.0
        expected = record["predicted_iou"] * max(0.0, record["similarity"])
        assert record["score"] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)


def test_crops_and_small_region_clean_up(sam, scene):
    image, _ = scene
    records = AdapterMaskGenerator(
        CustomSamPredictor(sam), **GRID, crop_n_layers=1, min_mask_region_area=20
    ).generate(image)
    assert len({tuple(r["crop_box"]) for r in records}) > 1  # masks from the crops are kept
    assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
    for record in records:
        mask = record["segmentation"].astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        if len(areas) > 1:  # SAM keeps the largest region when every one is small
            assert (areas >= 20).all()  # no island under min_mask_region_area
        assert record["area"] == int(mask.sum())


# ---------------------------------------------------------------- prior prompts


def test_prior_prompts_come_from_the_location_prior(sam, scene, prototype):
    image, _ = scene
    predictor = CustomSamPredictor(sam)
    settings = PriorSettings(max_clicks=3, min_similarity=0.0, relative=0.0)
    records = AdapterMaskGenerator(predictor, prototype=prototype, prior=settings).generate(image)
    prior = location_prior(predictor.features, prototype, tuple(predictor.input_size), 256, settings)
    clicks = {tuple(xy) for xy in (prior.positives * np.array([128 / 256, 96 / 192])).tolist()}
    assert len(clicks) == 3 and 1 <= len(records) <= 3  # one mask per prompt at most
    points = [tuple(r["point_coords"][0]) for r in records]
    assert len(set(points)) == len(points) and set(points) <= clicks
    for record in records:
        assert record["score"] == pytest.approx(record["predicted_iou"] * max(0.0, record["similarity"]))


def test_best_mask_only_keeps_each_prompts_most_confident_mask(sam, scene, prototype):
    image, _ = scene
    predictor = CustomSamPredictor(sam)
    options = {
        "prototype": prototype,
        "box_nms_thresh": 1.0,
        "prior": PriorSettings(max_clicks=4, relative=0),
    }
    every = AdapterMaskGenerator(predictor, best_mask_only=False, **options).generate(image)
    best = AdapterMaskGenerator(predictor, best_mask_only=True, **options).generate(image)
    points = [tuple(r["point_coords"][0]) for r in best]
    assert len(best) >= 2 and len(set(points)) == len(points)
    assert len(best) < len(every) <= 3 * len(best)  # (masks empty at full resolution are dropped)
    for record in best:
        same_prompt = [r for r in every if tuple(r["point_coords"][0]) == tuple(record["point_coords"][0])]
        assert 1 <= len(same_prompt) <= 3
        assert record["predicted_iou"] == max(r["predicted_iou"] for r in same_prompt)
        assert any(np.array_equal(record["segmentation"], r["segmentation"]) for r in same_prompt)
    grid = AdapterMaskGenerator(predictor, **GRID, best_mask_only=True, box_nms_thresh=1.0).generate(image)
    clicked = [tuple(r["point_coords"][0]) for r in grid]
    assert 0 < len(grid) <= 16 and len(set(clicked)) == len(clicked)  # at most one mask per click


def test_no_click_above_min_similarity_gives_no_masks(sam, scene, prototype):
    image, _ = scene
    predictor = CustomSamPredictor(sam)
    predictor.set_image(image)
    assert tuple(predictor.input_size) == (192, 256)  # image cells: rows 0-11
    features = predictor.features[0].double().numpy()
    cells = features - features[:, :12].mean(axis=(1, 2))[:, None, None]  # centred on the image cells
    cosine = np.einsum("c,chw->hw", prototype.vector.double().numpy(), cells) / np.linalg.norm(cells, axis=0)
    top = float(cosine[:12].max())
    assert top < 0.99
    settings = PriorSettings(min_similarity=top + 0.005)
    assert AdapterMaskGenerator(predictor, prototype=prototype, prior=settings).generate(image) == []
    settings = PriorSettings(min_similarity=top - 0.005, relative=0.0)
    assert len(AdapterMaskGenerator(predictor, prototype=prototype, prior=settings).generate(image)) >= 1


# ---------------------------------------------------------------- output modes


@pytest.mark.parametrize("prompts", ["grid", "prior"])
def test_rle_output_modes_decode_to_the_binary_masks(sam, scene, prototype, prompts):
    image, _ = scene
    predictor = CustomSamPredictor(sam)
    options = {**GRID, "prompts": prompts, "prototype": prototype}
    binary = AdapterMaskGenerator(predictor, **options).generate(image)
    coco = AdapterMaskGenerator(predictor, **options, output_mode="coco_rle").generate(image)
    raw = AdapterMaskGenerator(predictor, **options, output_mode="uncompressed_rle").generate(image)
    assert len(binary) == len(coco) == len(raw) > 0
    for b, c, u in zip(binary, coco, raw, strict=True):
        assert isinstance(c["segmentation"]["counts"], str) and c["segmentation"]["size"] == [96, 128]
        np.testing.assert_array_equal(mask_utils.decode(c["segmentation"]).astype(bool), b["segmentation"])
        np.testing.assert_array_equal(mask_utils.decode(to_coco_rle(u["segmentation"])), b["segmentation"])
        assert (b["score"], b["bbox"], b["area"]) == (c["score"], c["bbox"], c["area"])


# ---------------------------------------------------------------- adapters


def test_masks_come_through_the_active_adapter(sam, scene, prototype, adapter_factory):
    image, _ = scene
    predictor = CustomSamPredictor(sam)
    predictor.load_adapter(adapter_factory("box", seed=3))
    generator = AdapterMaskGenerator(predictor, prototype=prototype, prior=PriorSettings(relative=0))
    with predictor.use_adapter("box"):
        adapted = generator.generate(image)
    with predictor.use_adapter(None):
        plain = generator.generate(image)
    with predictor.disable_adapter():
        disabled = generator.generate(image)
    reference = AdapterMaskGenerator(
        CustomSamPredictor(sam), prototype=prototype, prior=PriorSettings(relative=0)
    )
    assert adapted and plain
    assert not _same_records(adapted, plain)  # the adapter answers the prompts
    assert _same_records(plain, disabled) and _same_records(plain, reference.generate(image))
    assert _same_records(adapted, generator.generate(image))  # "box" is active again
    assert predictor.active_adapter == "box"


def test_use_adapter_restores_the_state_on_errors(sam, adapter_factory):
    predictor = CustomSamPredictor(sam)
    predictor.load_adapter(adapter_factory("a", seed=1))
    predictor.load_adapter(adapter_factory("b", seed=2))
    assert predictor.active_adapter == "a"
    with pytest.raises(RuntimeError, match="boom"), predictor.use_adapter("b"):
        assert predictor.active_adapter == "b"
        raise RuntimeError("boom")
    assert predictor.active_adapter == "a"
    with predictor.disable_adapter():
        with predictor.use_adapter("b"):  # explicitly chosen: used even inside disable_adapter
            assert predictor.active_adapter == "b"
        assert predictor.active_adapter is None
        with pytest.raises(KeyError), predictor.use_adapter(None):
            assert predictor.active_adapter is None
            raise KeyError("x")
        assert predictor.active_adapter is None
    assert predictor.active_adapter == "a"
    with pytest.raises(UnknownAdapterError), predictor.use_adapter("missing"):
        pass
    assert predictor.active_adapter == "a"


def test_an_image_already_set_is_not_encoded_again(sam, scene, prototype):
    image, _ = scene
    predictor = CustomSamPredictor(sam)
    calls = []
    handle = sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        predictor.set_image(image)
        AdapterMaskGenerator(predictor, prototype=prototype).generate(image)
        AdapterMaskGenerator(predictor, **GRID).generate(image.copy())
    finally:
        handle.remove()
    assert len(calls) == 1


# ---------------------------------------------------------------- mask_similarity


def test_mask_similarity_is_the_coverage_weighted_mean():
    rng = np.random.default_rng(0)
    similarity = torch.as_tensor(rng.uniform(-1, 1, (4, 4)), dtype=torch.float32)
    masks = torch.as_tensor(rng.uniform(0, 1, (3, 16, 16)) > 0.6)
    masks[2] = False
    got = mask_similarity(masks, similarity)
    for m in range(2):
        total = inside = 0.0
        for row in range(4):
            for col in range(4):
                share = float(masks[m, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4].float().mean())
                total += share
                inside += share * float(similarity[row, col])
        assert float(got[m]) == pytest.approx(inside / total, abs=1e-6)
    assert float(got[2]) == 0.0  # an empty mask
