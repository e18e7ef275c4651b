"""Click-free evaluation (samplm.eval.click_free): COCO mask AP of methods, the one-shot comparison (PerSAM,
PerSAM-F, prior + adapter, grid upper bound), PerSAM-F's weights, and `samplm eval --auto`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_rect_dataset
from PIL import Image

from samplm import CustomSamPredictor
from samplm.adapter.prototype import TargetPrototype, valid_cells
from samplm.cli import main
from samplm.constants import PROTOTYPE_NAME
from samplm.data import read_mask_folder
from samplm.data.images import load_image, read_mask_file
from samplm.eval.click_free import (
    PERSAM_PRIOR,
    AutoMethod,
    OneShotCase,
    evaluate_ap,
    evaluate_one_shot,
    fit_persam_f,
    one_shot_methods,
)
from samplm.eval.metrics import iou
from samplm.prompts.location_prior import PriorSettings, location_prior
from samplm.segment.generator import AdapterMaskGenerator
from samplm.segment.prototype_fitting import fit_prototype

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (96, 128)
YELLOW, BLUE, GREEN = (220, 180, 40), (40, 90, 230), (30, 200, 60)
# Two 30 x 40 boxes per image (top-left corners), moved a little from image to image.
BOXES = ([(10, 10), (50, 70)], [(14, 20), (54, 60)])
GRID = {"prompts": "grid", "points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
ONE_SHOT = {"samf_steps": 5, "grid_points": 4, "progress": False}


def _box(y: int, x: int, dx: int = 0) -> np.ndarray:
    mask = np.zeros(SIZE, bool)
    mask[y : y + 30, x + dx : x + dx + 40] = True
    return mask


def _scene(seed: int, masks: list[np.ndarray], colour=YELLOW) -> np.ndarray:
    image = np.random.default_rng(seed).integers(0, 60, (*SIZE, 3), dtype=np.uint8)
    for mask in masks:
        image[mask] = colour
    return image


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Two photos with two boxes each (label maps 1 and 2): ``(InstanceDataset, {image bytes: masks})``."""
    root = tmp_path_factory.mktemp("ap")
    for name in ("images", "masks"):
        (root / name).mkdir()
    truth = {}
    for i, corners in enumerate(BOXES):
        masks = [_box(y, x) for y, x in corners]
        image = _scene(i, masks)
        labels = np.zeros(SIZE, np.uint8)
        for value, mask in enumerate(masks, 1):
            labels[mask] = value
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(labels).save(root / "masks" / f"{i}.png")
        truth[image.tobytes()] = masks
    return read_mask_folder(root / "images", root / "masks"), truth


class ListedMasks(AdapterMaskGenerator):
    """A stand-in method: for each image, the ``(mask, score)`` records it is told to return; notes which
    adapter the predictor had active when asked."""

    def __init__(self, predictor: CustomSamPredictor, answers: dict[bytes, list[tuple[np.ndarray, float]]]):
        super().__init__(predictor, prompts="grid", points_per_side=1)
        self.answers = answers
        self.active: list[str | None] = []

    def generate(self, image: np.ndarray) -> list[dict]:
        self.active.append(self.predictor.active_adapter)
        return [{"segmentation": m, "score": s} for m, s in self.answers.get(image.tobytes(), [])]


def _answers(truth, *, dx: int = 0, false_positive: float | None = None):
    """Each ground-truth mask (shifted ``dx`` px right) scored 0.9, 0.8; plus an empty-area false
    positive scored ``false_positive`` in every image."""
    answers = {}
    for key, masks in truth.items():
        records = [(np.roll(m, dx, axis=1), 0.9 - 0.1 * k) for k, m in enumerate(masks)]
        if false_positive is not None:
            wrong = np.zeros(SIZE, bool)
            wrong[84:94, 2:30] = True
            records.append((wrong, false_positive))
        answers[key] = records
    return answers


# ---------------------------------------------------------------- evaluate_ap


def test_ap_of_listed_detections(sam, dataset):
    data, truth = dataset
    predictor = CustomSamPredictor(sam)
    variants = {
        "exact": _answers(truth),
        "false positive ranked first": _answers(truth, false_positive=0.99),
        "false positive ranked last": _answers(truth, false_positive=0.01),
        "shifted": _answers(truth, dx=8),  # IoU 32 / 48 = 0.67 for every box
        "nothing": {},
    }
    methods = [AutoMethod(name, None, ListedMasks(predictor, a)) for name, a in variants.items()]
    results = evaluate_ap(predictor, data, methods, progress=False)
    assert list(results) == list(variants)
    for row in results.values():
        assert set(row) == {"AP", "AP50", "AP75", "seconds_per_image", "detections"}
        assert row["seconds_per_image"] >= 0
    assert [results[name]["detections"] for name in variants] == [4.0, 6.0, 6.0, 4.0, 0.0]
    assert results["exact"]["AP"] == pytest.approx(1.0)
    assert results["exact"]["AP50"] == results["exact"]["AP75"] == pytest.approx(1.0)
    # Ranked first, the two false positives cap precision at every recall: 4 right of 4 + 2 detections.
    assert results["false positive ranked first"]["AP"] == pytest.approx(4 / 6)
    assert results["false positive ranked last"]["AP"] == pytest.approx(1.0)  # after every match
    # IoU 0.67 passes the thresholds 0.50 ... 0.65: 4 of 10.
    shifted = results["shifted"]
    assert (shifted["AP"], shifted["AP50"], shifted["AP75"]) == pytest.approx((0.4, 1.0, 0.0))
    assert results["nothing"] == {**results["nothing"], "AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    assert all(len(m.generator.active) == 2 for m in methods)  # each method once per image


def test_ap_methods_decode_with_their_adapter(sam, dataset, adapter_factory):
    data, truth = dataset
    predictor = CustomSamPredictor(sam)
    predictor.load_adapter(adapter_factory("box", seed=1), adapter_name="box", activate=False)
    base, adapted = ListedMasks(predictor, _answers(truth)), ListedMasks(predictor, _answers(truth))
    methods = [AutoMethod("base", None, base), AutoMethod("adapter", "box", adapted)]
    before = predictor.active_adapter
    results = evaluate_ap(predictor, data, methods, progress=False)
    assert base.active == [None, None] and adapted.active == ["box", "box"]
    assert predictor.active_adapter == before  # restored
    assert results["base"]["AP"] == results["adapter"]["AP"] == pytest.approx(1.0)


def test_ap_encodes_each_image_once_for_all_methods(sam, dataset, adapter_factory):
    data, _ = dataset
    predictor = CustomSamPredictor(sam)
    predictor.load_adapter(adapter_factory("box", seed=1), adapter_name="box", activate=False)
    generator = AdapterMaskGenerator(predictor, **GRID)
    methods = [AutoMethod("grid", None, generator), AutoMethod("grid + adapter", "box", generator)]
    calls = []
    hook = sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        results = evaluate_ap(predictor, data, methods, progress=False)
    finally:
        hook.remove()
    assert len(calls) == len(data.image_paths()) == 2
    for row in results.values():
        assert row["detections"] > 0 and row["seconds_per_image"] > 0
        assert all(0.0 <= row[k] <= 1.0 for k in ("AP", "AP50", "AP75"))


# ---------------------------------------------------------------- PERSAM_PRIOR and fit_persam_f


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    mask = _box(20, 30)
    return _scene(10, [mask]), mask


def test_persam_prior_is_the_most_and_least_similar_cell(sam, reference):
    predictor = CustomSamPredictor(sam)
    prototype = fit_prototype(predictor, [reference])
    image = _scene(11, [_box(40, 60)])
    predictor.set_image(image)
    input_size, img_size = tuple(predictor.input_size), int(sam.image_encoder.img_size)
    found = location_prior(predictor.features, prototype, input_size, img_size, PERSAM_PRIOR)
    similarity = prototype.similarity(predictor.features, input_size, img_size).numpy()
    valid = valid_cells(similarity.shape, input_size, img_size).numpy()
    cell = img_size / similarity.shape[1]

    def centre(values: np.ndarray) -> list[float]:
        row, col = np.unravel_index(int(np.argmax(values)), values.shape)
        return [(col + 0.5) * cell, (row + 0.5) * cell]

    np.testing.assert_allclose(found.positives, [centre(np.where(valid, similarity, -np.inf))])
    np.testing.assert_allclose(found.negatives, [centre(np.where(valid, -similarity, -np.inf))])


def test_fit_persam_f_weights(sam, reference):
    predictor = CustomSamPredictor(sam)
    prototype = fit_prototype(predictor, [reference])
    assert fit_persam_f(predictor, prototype, reference, steps=0) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    fitted = fit_persam_f(predictor, prototype, reference, steps=20, lr=0.05)
    assert len(fitted) == 3 and sum(fitted) == pytest.approx(1.0)
    assert fitted != pytest.approx((1 / 3, 1 / 3, 1 / 3), abs=1e-3)  # the steps moved them
    assert fit_persam_f(predictor, prototype, reference, steps=20, lr=0.05) == fitted  # deterministic


def test_fit_persam_f_without_a_click_keeps_equal_weights(sam, reference):
    predictor = CustomSamPredictor(sam)
    prototype = fit_prototype(predictor, [reference])
    strict = PriorSettings(min_similarity=1.0, relative=1.0)
    predictor.set_image(reference[0])
    img_size = int(sam.image_encoder.img_size)
    assert (
        len(
            location_prior(
                predictor.features, prototype, tuple(predictor.input_size), img_size, strict
            ).positives
        )
        == 0
    )
    assert fit_persam_f(predictor, prototype, reference, strict, steps=20, lr=0.05) == (1 / 3, 1 / 3, 1 / 3)


# ---------------------------------------------------------------- one_shot_methods and evaluate_one_shot


def test_one_shot_methods(sam, reference, adapter_factory):
    predictor = CustomSamPredictor(sam)
    methods = one_shot_methods(predictor, reference, None, samf_steps=5, grid_points=3)
    assert [m.name for m in methods] == [
        "PerSAM (prior + base decoder)",
        "PerSAM-F (prior + 2 fitted weights)",
        "SAM grid AMG, best match (upper bound)",
    ]
    assert [m.adapter_name for m in methods] == [None, None, None]
    assert [m.upper_bound for m in methods] == [False, False, True]
    expected = fit_prototype(CustomSamPredictor(sam), [reference])
    persam, persam_f, grid = (m.generator for m in methods)
    for generator in (persam, persam_f):
        assert generator.prompts == "prior" and generator.prior == PERSAM_PRIOR
        np.testing.assert_allclose(generator.prototype.vector.numpy(), expected.vector.numpy(), atol=1e-6)
    assert persam.mask_weights is None
    weights = fit_persam_f(CustomSamPredictor(sam), expected, reference, steps=5)
    assert persam_f.mask_weights == pytest.approx(weights, abs=1e-6)
    assert grid.prompts == "grid" and grid.best_mask_only and grid.prototype is None
    assert len(grid.point_grids[0]) == 9
    assert (grid.pred_iou_thresh, grid.stability_score_thresh) == (0, 0)

    predictor.load_adapter(adapter_factory("box", seed=1), adapter_name="box", activate=False)
    with_adapter = one_shot_methods(predictor, reference, "box", samf_steps=0, grid_points=3)
    assert [(m.name, m.adapter_name) for m in with_adapter][2] == ("prior + adapter", "box")
    assert len(with_adapter) == 4 and with_adapter[2].generator.prior == PERSAM_PRIOR


def _case(name: str, seed: int, colour, corners, adapter_name=None) -> OneShotCase:
    """The first box is the reference; each target also shows a green box of another object, which the
    grid may rank above the target (so that its top-scored and best-matching masks differ)."""
    pairs = []
    for k, (y, x) in enumerate(corners):
        mask = _box(y, x)
        image = _scene(seed + k, [mask], colour)
        if k:
            other = np.zeros(SIZE, bool)
            dy, dx = (60, 5) if x > 50 else (5, 80)
            other[dy : dy + 30, dx : dx + 44] = True
            image[other & ~mask] = GREEN
        pairs.append((image, mask))
    return OneShotCase(name, pairs[0], pairs[1:], adapter_name)


def test_evaluate_one_shot(sam, adapter_factory):
    predictor = CustomSamPredictor(sam)
    predictor.load_adapter(adapter_factory("box", seed=1), adapter_name="box", activate=False)
    cases = [
        _case("yellow", 20, YELLOW, [(10, 10), (40, 60), (50, 20)], "box"),  # two targets
        _case("blue", 30, BLUE, [(50, 70), (15, 25)], "box"),  # one target
    ]
    table = evaluate_one_shot(predictor, cases, **ONE_SHOT)
    names = {
        "PerSAM (prior + base decoder)",
        "PerSAM-F (prior + 2 fitted weights)",
        "prior + adapter",
        "SAM grid AMG, best match (upper bound)",
    }
    assert set(table) == names
    for row in table.values():
        assert set(row) == {"yellow", "blue", "all"}
        assert all(0.0 <= v <= 1.0 for v in row.values())
        assert row["all"] == pytest.approx((2 * row["yellow"] + row["blue"]) / 3)  # mean over targets

    check = CustomSamPredictor(sam)
    grid = AdapterMaskGenerator(
        check,
        prompts="grid",
        points_per_side=4,
        pred_iou_thresh=0,
        stability_score_thresh=0,
        best_mask_only=True,
    )
    for case in cases:
        prototype = fit_prototype(check, [case.reference])
        persam = AdapterMaskGenerator(check, prototype=prototype, prior=PERSAM_PRIOR)
        top, best, first = [], [], []
        for image, mask in case.targets:
            records = grid.generate(image)
            top.append(iou(records[0]["segmentation"], mask))
            best.append(max(iou(r["segmentation"], mask) for r in records))
            found = persam.generate(image)
            first.append(iou(found[0]["segmentation"], mask) if found else 0.0)
        upper = table["SAM grid AMG, best match (upper bound)"][case.name]
        assert upper == pytest.approx(np.mean(best)) and upper >= np.mean(top) - 1e-9
        assert table["PerSAM (prior + base decoder)"][case.name] == pytest.approx(np.mean(first))


def test_evaluate_one_shot_without_an_adapter(sam):
    predictor = CustomSamPredictor(sam)
    table = evaluate_one_shot(predictor, [_case("yellow", 20, YELLOW, [(10, 10), (40, 60)])], **ONE_SHOT)
    assert "prior + adapter" not in table and len(table) == 3
    assert all(row["all"] == row["yellow"] for row in table.values())


# ---------------------------------------------------------------- samplm eval --auto


@pytest.fixture()
def rect_data(tmp_path) -> Path:
    return write_rect_dataset(tmp_path / "data", count=5)


def _argv(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "--data",
        str(data / "masks"),
        "--images",
        str(data / "images"),
        "--format",
        "masks",
        "--model-type",
        "samplm_tiny",
        "--device",
        "cpu",
        "--cache",
        str(tmp_path / "cache"),
        "--val-fraction",
        "0.4",
        "--out",
        str(tmp_path / "out"),
        "--auto",
        *extra,
    ]


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_cli_eval_auto(capsys, sam, rect_data, tmp_path, adapter_factory):
    adapter_dir = tmp_path / "adapters" / "rect"
    adapter = adapter_factory("rect", seed=1)
    with torch.no_grad():  # strong enough to change some masks of the tiny base
        for name, param in adapter.named_parameters():
            if "norm_out" not in name:
                param.mul_(5)
    adapter.save_pretrained(adapter_dir)
    pairs = [
        (load_image(rect_data / "images" / f"{i}.png"), read_mask_file(rect_data / "masks" / f"{i}.png"))
        for i in range(2)
    ]
    fit_prototype(CustomSamPredictor(sam), pairs, task="rect").save(adapter_dir)
    assert main(_argv(rect_data, tmp_path, "--adapter", str(adapter_dir))) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "auto_results.json").read_text())
    assert list(results) == ["prior + base decoder", "prior + rect adapter"]
    for name, row in results.items():
        assert all(0.0 <= row[k] <= 1.0 for k in ("AP", "AP50", "AP75"))
        assert row["seconds_per_image"] >= 0 and row["detections"] >= 1
        assert f"| {name} | {100 * row['AP']:.2f} |" in printed
    assert "auto_results.json" in printed

    # The rows are evaluate_ap of the prior (from the adapter's prototype) on the same split, decoded by
    # the base decoder and by the adapter.
    evaluated = read_mask_folder(rect_data / "images", rect_data / "masks").split(0.4, 0)[1]
    predictor = CustomSamPredictor(sam)
    predictor.load_adapter(adapter_dir, adapter_name="rect", activate=False)
    generator = AdapterMaskGenerator(predictor, prototype=TargetPrototype.load(adapter_dir), prompts="prior")
    methods = [AutoMethod("base", None, generator), AutoMethod("rect", "rect", generator)]
    expected = evaluate_ap(predictor, evaluated, methods, progress=False)
    for row, method in (("prior + base decoder", "base"), ("prior + rect adapter", "rect")):
        for key in ("AP", "AP50", "AP75", "detections"):
            assert results[row][key] == pytest.approx(expected[method][key])
        assert results[row]["detections"] <= 8 * len(evaluated.image_paths())  # <= max_clicks per image


def test_cli_eval_auto_errors(capsys, rect_data, tmp_path, adapter_factory):
    assert "--adapter" in _error(capsys, _argv(rect_data, tmp_path))
    bare = tmp_path / "adapters" / "bare"
    adapter_factory("bare", seed=2).save_pretrained(bare)
    assert not (bare / PROTOTYPE_NAME).exists()
    err = _error(capsys, _argv(rect_data, tmp_path, "--adapter", str(bare)))
    assert "fit-prototype" in err and PROTOTYPE_NAME in err
    assert not (tmp_path / "out" / "auto_results.json").exists()
