"""Click-free segmentation of a folder: make_tasks / segment_images, `samplm segment` and
`samplm fit-prototype`, the prototype written by training, and prototypes on the (loopback) Hub."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_rect_dataset
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from safetensors import safe_open
from segment_anything.utils.amg import mask_to_rle_pytorch

from samplm import AdapterConfig, CustomSamPredictor
from samplm.adapter.hub import resolve_adapter
from samplm.adapter.prototype import TargetPrototype
from samplm.cache.embeddings import EmbeddingCache, sam_encoder_key
from samplm.cli import main
from samplm.constants import PROTOTYPE_HEADER_KEY, PROTOTYPE_NAME, WEIGHTS_NAME
from samplm.data import read_mask_folder
from samplm.data.images import load_image, read_mask_file
from samplm.errors import PrototypeError
from samplm.prompts.location_prior import PriorSettings
from samplm.segment.jobs import SegmentSummary, make_tasks, segment_images, to_coco_rle
from samplm.segment.prototype_fitting import fit_prototype

# Cheap generator settings: a 2 x 2 grid, no thresholds (the tiny base's IoU predictions are low).
FAST = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
FAST_FLAGS = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def folder(tmp_path) -> Path:
    """``images/`` (three 96 x 128 photos with yellow boxes, and a file that is no image) and ``masks/``
    (the first box of each photo)."""
    rng = np.random.default_rng(0)
    for name in ("images", "masks"):
        (tmp_path / name).mkdir()
    for i in range(3):
        image = rng.integers(0, 60, (96, 128, 3), dtype=np.uint8)
        mask = np.zeros((96, 128), np.uint8)
        mask[10 + 4 * i : 40 + 4 * i, 10 + 6 * i : 44 + 6 * i] = 255
        image[mask > 0] = (220, 180, 40)
        image[55:85, 70:110] = (220, 180, 40)  # a second instance
        Image.fromarray(image).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    (tmp_path / "images" / "3_broken.png").write_bytes(b"this is not a PNG")
    return tmp_path


def _images(folder: Path) -> list[Path]:
    return sorted((folder / "images").glob("*.png"))


def _pairs(folder: Path, count: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    return [
        (load_image(folder / "images" / f"{i}.png"), read_mask_file(folder / "masks" / f"{i}.png"))
        for i in range(count)
    ]


@pytest.fixture()
def adapters(folder, sam, adapter_factory) -> dict[str, Path]:
    """``box``: an adapter with its prototype beside it; ``other``: one without a prototype."""
    paths = {"box": folder / "adapters" / "box", "other": folder / "adapters" / "other"}
    adapter_factory("box", seed=1).save_pretrained(paths["box"])
    adapter_factory("other", seed=2).save_pretrained(paths["other"])
    fit_prototype(CustomSamPredictor(sam), _pairs(folder), task="box").save(paths["box"])
    return paths


# ---------------------------------------------------------------- make_tasks


def test_make_tasks_reads_prototypes_beside_adapters(sam, folder, adapters, adapter_factory):
    adapter_factory("box", seed=5).save_pretrained(folder / "adapters" / "box2")
    predictor = CustomSamPredictor(sam)
    specs = [adapters["box"], adapters["other"], folder / "adapters" / "box2"]
    tasks, notes = make_tasks(predictor, specs, box_nms_thresh=0.5, **FAST)
    assert [t.name for t in tasks] == ["box", "other", "box#2"]
    assert [t.adapter_name for t in tasks] == predictor.adapters == ["box", "other", "box#2"]
    assert [t.generator.prompts for t in tasks] == ["prior", "grid", "grid"]
    assert all(t.generator.box_nms_thresh == 0.5 and t.generator.predictor is predictor for t in tasks)
    saved = TargetPrototype.load(adapters["box"])
    assert torch.equal(tasks[0].generator.prototype.vector, saved.vector)
    assert len(notes) == 2 and "'other'" in notes[0] and "'box#2'" in notes[1]
    assert all(PROTOTYPE_NAME in note and "grid" in note for note in notes)
    signature = tasks[1].signature()
    assert (signature["name"], signature["adapter"], signature["prompts"]) == ("other", "other", "grid")
    assert signature["prototype"] is None and signature["points"] is not None
    assert tasks[0].signature()["prototype"] is not None and tasks[0].signature()["points"] is None
    json.dumps(signature)  # stored with each image's results


def test_make_tasks_with_a_reference(sam, folder, adapters):
    reference = fit_prototype(CustomSamPredictor(sam), _pairs(folder, 1), task="thing")
    predictor = CustomSamPredictor(sam)
    tasks, notes = make_tasks(predictor, [adapters["other"]], reference=reference, **FAST)
    assert notes == [] and tasks[0].generator.prompts == "prior"  # the reference replaces the grid
    assert torch.equal(tasks[0].generator.prototype.vector, reference.vector)
    (task,), notes = make_tasks(CustomSamPredictor(sam), reference=reference)
    assert (task.name, task.adapter_name, task.generator.prompts, notes) == ("thing", None, "prior", [])
    anonymous = TargetPrototype(reference.vector, 1, reference.encoder)
    assert make_tasks(CustomSamPredictor(sam), reference=anonymous)[0][0].name == "reference"


def test_make_tasks_refusals(sam, adapters):
    with pytest.raises(ValueError, match="nothing to segment"):
        make_tasks(CustomSamPredictor(sam))
    with pytest.raises(PrototypeError, match=r"adapter 'other' has no prototype\.safetensors.*fit-prototype"):
        make_tasks(CustomSamPredictor(sam), [adapters["other"]], prompts="prior")
    tasks, _ = make_tasks(CustomSamPredictor(sam), [adapters["box"]], prompts="prior")
    assert tasks[0].generator.prompts == "prior"


# ---------------------------------------------------------------- segment_images


def _coco(out: Path) -> tuple[COCO, COCO]:
    gt = COCO()
    gt.dataset = json.loads((out / "images.json").read_text())
    gt.createIndex()
    return gt, gt.loadRes(str(out / "results.json"))


def test_segment_images_writes_coco_results_and_resumes(sam, folder, adapters):
    predictor = CustomSamPredictor(sam)
    tasks, _ = make_tasks(predictor, [adapters["box"], adapters["other"]], **FAST)
    images, out = _images(folder), folder / "out"
    calls = []
    handle = sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        summary = segment_images(predictor, tasks, images, out, progress=False)
        encoded = len(calls)
        again = segment_images(predictor, tasks, images, out, progress=False)
    finally:
        handle.remove()
    assert encoded == 3  # once per readable image, although two tasks decode each
    assert len(calls) == 3  # the second run encodes nothing

    broken = str(folder / "images" / "3_broken.png")
    assert (summary.images, summary.segmented, summary.resumed) == (4, 3, 0)
    assert list(summary.failed) == [broken] and "cannot be read" in summary.failed[broken]
    assert summary.prompts == {"box": "prior", "other": "grid"} and summary.seconds_per_image > 0

    results = json.loads((out / "results.json").read_text())
    assert summary.masks == len(results) > 0
    assert {r["category_id"] for r in results} == {1, 2}
    gt, dt = _coco(out)
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == ["box", "other"]
    assert [(i["id"], Path(i["file_name"]).name, i["height"], i["width"]) for i in gt.dataset["images"]] == [
        (k + 1, f"{k}.png", 96, 128) for k in range(3)
    ]
    assert len(dt.anns) == len(results) and set(dt.getImgIds()) <= {1, 2, 3}
    for image_id in (1, 2, 3):
        for category_id in (1, 2):
            group = [r for r in results if (r["image_id"], r["category_id"]) == (image_id, category_id)]
            assert [r["score"] for r in group] == sorted((r["score"] for r in group), reverse=True)
    for r in results:
        decoded = mask_utils.decode(r["segmentation"])
        assert decoded.shape == (96, 128) and r["area"] == int(decoded.sum())
    assert {r["image_id"] for r in results if r["category_id"] == 1} == {1, 2, 3}  # prior finds the box

    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(asdict(again)))  # latest
    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == ["000001_0.png", "000002_1.png", "000003_2.png"]
    for k, name in enumerate(overlays):
        drawn = np.asarray(Image.open(out / "overlays" / name).convert("RGB"))
        original = load_image(images[k])
        assert drawn.shape == original.shape and not np.array_equal(drawn, original)
    assert len(list((out / "per_image").iterdir())) == 3

    before = (out / "results.json").read_bytes()
    assert (again.images, again.segmented, again.resumed, again.masks) == (4, 0, 3, summary.masks)
    assert list(again.failed) == [broken]  # still reported
    assert (out / "results.json").read_bytes() == before
    # nothing segmented by the second run: no time to report, and null rather than 0.0 in summary.json
    assert again.seconds_per_image is None
    assert json.loads((out / "summary.json").read_text())["seconds_per_image"] is None
    assert again.line().endswith("no time per image (none segmented by this run)")


def test_other_tasks_are_not_resumed_from_an_earlier_run(sam, folder, adapters):
    predictor = CustomSamPredictor(sam)
    tasks, _ = make_tasks(predictor, [adapters["box"], adapters["other"]], **FAST)
    images = _images(folder)[:2]
    first = segment_images(predictor, tasks, images, folder / "out", overlays=False, progress=False)
    second = segment_images(predictor, tasks[:1], images, folder / "out", overlays=False, progress=False)
    assert (first.segmented, second.segmented, second.resumed) == (2, 2, 0)
    results = json.loads((folder / "out" / "results.json").read_text())
    assert {r["category_id"] for r in results} == {1}  # only the task of this run
    assert not (folder / "out" / "overlays").exists()


def test_changed_settings_are_not_resumed(sam, folder, adapters):
    images, runs = _images(folder)[:2], []
    for options in ({}, {}, {"pred_iou_thresh": 0.5}):  # as three separate runs of the command
        predictor = CustomSamPredictor(sam)
        tasks, _ = make_tasks(predictor, [adapters["box"]], prompts="prior", **options)
        runs.append(segment_images(predictor, tasks, images, folder / "out", overlays=False, progress=False))
    first, same, other = runs
    assert (first.segmented, same.resumed, other.segmented, other.resumed) == (2, 2, 2, 0)


def test_images_without_a_match_are_counted(sam, folder):
    reference = fit_prototype(CustomSamPredictor(sam), _pairs(folder, 1), task="box")
    predictor = CustomSamPredictor(sam)
    tasks, _ = make_tasks(predictor, reference=reference, prior=PriorSettings(min_similarity=1.0))
    summary = segment_images(predictor, tasks, _images(folder)[:3], folder / "out", progress=False)
    assert (summary.segmented, summary.no_match, summary.masks) == (3, 3, 0)
    assert json.loads((folder / "out" / "results.json").read_text()) == []
    assert "3 without a match" in summary.line()
    reachable = make_tasks(predictor, reference=reference, prior=PriorSettings(min_similarity=0.0))[0]
    found = segment_images(predictor, reachable, _images(folder)[:3], folder / "out2", progress=False)
    assert found.no_match == 0 and found.masks > 0


def test_segment_images_needs_a_task(sam, folder):
    with pytest.raises(ValueError, match="at least one task"):
        segment_images(CustomSamPredictor(sam), [], _images(folder), folder / "out")


def test_to_coco_rle():
    rng = np.random.default_rng(0)
    mask = rng.uniform(size=(30, 41)) > 0.6
    rle = to_coco_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [30, 41]
    json.dumps(rle)
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
    uncompressed = mask_to_rle_pytorch(torch.as_tensor(mask)[None])[0]  # what SAM's generator makes
    np.testing.assert_array_equal(mask_utils.decode(to_coco_rle(uncompressed)).astype(bool), mask)
    assert to_coco_rle(rle) == rle


def test_summary_line():
    summary = SegmentSummary(images=5, segmented=3, resumed=1, no_match=2, failed={"x": "bad"}, masks=7)
    assert summary.line().startswith(
        "5 images: 3 segmented, 1 already done, 2 without a match, 1 failed; 7 masks"
    )
    assert SegmentSummary(images=1, segmented=1, seconds_per_image=0.25).line().endswith("0.250 s per image")


# ---------------------------------------------------------------- command line


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_errors_are_one_line(capsys, folder, adapters):
    out = str(folder / "out")
    tiny = ["--model-type", "samplm_tiny", "--device", "cpu"]
    images, image, mask = (
        str(folder / "images"),
        str(folder / "images" / "0.png"),
        str(folder / "masks" / "0.png"),
    )
    assert "--images" in _error(capsys, ["segment", "--out", out, "--adapter", str(adapters["box"]), *tiny])
    assert "--out" in _error(
        capsys, ["segment", "--images", images, "--adapter", str(adapters["box"]), *tiny]
    )
    assert "--model-type" in _error(capsys, ["segment", "--images", images, "--out", out])
    together = "--reference-image and --reference-mask go together"
    assert together in _error(
        capsys, ["segment", "--images", images, "--out", out, "--reference-image", image, *tiny]
    )
    assert together in _error(
        capsys, ["segment", "--images", images, "--out", out, "--reference-mask", mask, *tiny]
    )
    two_images = ["--reference-image", image, str(folder / "images" / "1.png"), "--reference-mask", mask]
    assert "one mask per image" in _error(
        capsys, ["segment", "--images", images, "--out", out, *two_images, *tiny]
    )
    (folder / "empty").mkdir()
    no_images = [
        "segment",
        "--images",
        str(folder / "empty"),
        "--out",
        out,
        "--adapter",
        str(adapters["box"]),
    ]
    assert "no images found" in _error(capsys, [*no_images, *tiny])
    assert "nothing to segment" in _error(capsys, ["segment", "--images", images, "--out", out, *tiny])
    assert "--max-images" in _error(capsys, [*no_images, "--max-images", "0", *tiny])
    assert "--points-per-side" in _error(capsys, [*no_images, "--points-per-side", "0", *tiny])
    assert "--prompts" in _error(capsys, [*no_images, "--prompts", "everywhere", *tiny])
    fit = ["fit-prototype", "--images", image, "--masks", mask, *tiny]
    both = [*fit, "--adapter", str(adapters["other"]), "--out", str(folder / "p.safetensors")]
    assert "exactly one of --adapter" in _error(capsys, both)
    assert "exactly one of --adapter" in _error(capsys, fit)
    assert "--masks" in _error(capsys, ["fit-prototype", "--images", image, "--out", out, *tiny])
    two = ["fit-prototype", "--images", image, str(folder / "images" / "1.png"), "--masks", mask]
    assert "one mask per image" in _error(capsys, [*two, "--out", out, *tiny])
    assert not Path(out).exists() and not (adapters["other"] / PROTOTYPE_NAME).exists()


def test_cli_prior_settings_are_checked(capsys, folder, adapters):
    argv = ["segment", "--images", str(folder / "images"), "--out", str(folder / "out")]
    argv += ["--adapter", str(adapters["box"]), "--model-type", "samplm_tiny", "--device", "cpu"]
    assert "--min-similarity must be" in _error(capsys, [*argv, "--min-similarity", "2"])
    assert "--max-clicks must be" in _error(capsys, [*argv, "--max-clicks", "0"])


def test_cli_adapter_without_prototype_falls_back_to_a_grid(capsys, folder, adapters):
    out = folder / "out"
    argv = ["segment", "--adapter", str(adapters["other"]), "--images", str(folder / "images")]
    argv += ["--out", str(out), "--model-type", "samplm_tiny", "--device", "cpu", "--max-images", "2"]
    assert main([*argv, *FAST_FLAGS, "--no-overlays"]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("samplm: note:")]
    assert len(notes) == 1 and "'other'" in notes[0] and PROTOTYPE_NAME in notes[0]
    assert "2 images: 2 segmented" in captured.out and "results.json" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == {"other": "grid"} and summary["images"] == 2
    assert not (out / "overlays").exists() and len(list((out / "per_image").iterdir())) == 2


def test_cli_fit_prototype_into_an_adapter_then_segment(capsys, sam, folder, adapters):
    target = adapters["other"]
    argv = ["fit-prototype", "--images", str(folder / "images" / "0.png"), str(folder / "images" / "1.png")]
    masks = [str(folder / "masks" / "0.png"), str(folder / "masks" / "1.png")]
    argv += ["--masks", *masks, "--adapter", str(target), "--model-type", "samplm_tiny"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert f"prototype of 2 mask(s) written to {target / PROTOTYPE_NAME}" in capsys.readouterr().out
    written = TargetPrototype.load(target)
    expected = fit_prototype(CustomSamPredictor(sam), _pairs(folder, 2))
    torch.testing.assert_close(written.vector, expected.vector, rtol=0, atol=1e-6)
    assert (written.num_masks, written.task, written.encoder) == (2, "other", sam_encoder_key(sam))

    out = folder / "out"
    argv = ["segment", "--adapter", str(target), "--images", str(folder / "images"), "--out", str(out)]
    assert main([*argv, "--model-type", "samplm_tiny", "--device", "cpu", "--max-clicks", "2"]) == 0
    captured = capsys.readouterr()
    assert "samplm: note:" not in captured.err
    assert f"samplm: skipped an image: {folder / 'images' / '3_broken.png'}: " in captured.err
    assert "4 images: 3 segmented, 0 already done" in captured.out and "1 failed" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompts"] == {"other": "prior"}
    results = json.loads((out / "results.json").read_text())
    per_image = [sum(r["image_id"] == i for r in results) for i in (1, 2, 3)]
    assert all(1 <= n <= 2 for n in per_image)  # best mask of at most --max-clicks prompts
    assert main([*argv, "--model-type", "samplm_tiny", "--device", "cpu", "--max-clicks", "2"]) == 0
    assert "3 already done" in capsys.readouterr().out


def test_cli_segment_with_a_reference_and_no_adapter(capsys, folder):
    out = folder / "out"
    argv = ["segment", "--images", str(folder / "images"), "--out", str(out), "--max-images", "2"]
    argv += [
        "--reference-image",
        str(folder / "images" / "0.png"),
        "--reference-mask",
        str(folder / "masks" / "0.png"),
    ]
    assert main([*argv, "--model-type", "samplm_tiny", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert json.loads((out / "images.json").read_text())["categories"] == [{"id": 1, "name": "reference"}]
    assert json.loads((out / "summary.json").read_text())["prompts"] == {"reference": "prior"}


def test_cli_segment_from_a_config_file(capsys, folder, adapters):
    config = folder / "segment.json"
    out = folder / "out"
    config.write_text(
        json.dumps(
            {
                "adapter": [str(adapters["other"])],
                "images": str(folder / "images"),
                "out": str(out),
                "model_type": "samplm_tiny",
                "device": "cpu",
                "max_images": 1,
                "points_per_side": 2,
                "pred_iou_thresh": 0,
                "stability_score_thresh": 0,
            }
        )
    )
    assert main(["segment", "--config", str(config), "--no-overlays"]) == 0
    capsys.readouterr()
    assert json.loads((out / "summary.json").read_text())["images"] == 1


def _fit_argv(folder: Path, out: Path) -> list[str]:
    """``samplm fit-prototype`` on the first photo and mask of ``folder``, written to ``out``."""
    argv = ["fit-prototype", "--images", str(folder / "images" / "0.png")]
    argv += ["--masks", str(folder / "masks" / "0.png"), "--out", str(out)]
    return [*argv, "--model-type", "samplm_tiny", "--device", "cpu"]


def test_cli_fit_prototype_to_a_directory_twice(capsys, folder):
    argv = _fit_argv(folder, folder / "protos")
    assert main([*argv, "--task", "box"]) == 0
    assert TargetPrototype.load(folder / "protos").task == "box"
    config = folder / "fit.json"
    config.write_text(json.dumps({"task": "crate"}))
    assert main([*argv, "--config", str(config)]) == 0  # options from a file; rewritten in place
    capsys.readouterr()
    assert TargetPrototype.load(folder / "protos").task == "crate"


def test_cli_fit_prototype_to_a_file_twice(capsys, folder):
    argv = _fit_argv(folder, folder / "p.safetensors")
    assert main(argv) == 0
    assert main(argv) == 0


# ---------------------------------------------------------------- training writes a prototype


def test_training_writes_the_prototype_of_the_training_masks(tmp_path, tiny_sam):
    from samplm.train.settings import TrainConfig
    from samplm.train.trainer import train
    from samplm.train.training_set import TrainingSet

    root = write_rect_dataset(tmp_path / "data", count=3)
    dataset = read_mask_folder(root / "images", root / "masks")
    cache = EmbeddingCache.for_model(root / "cache", tiny_sam)
    cache.build(tiny_sam, dataset.image_paths(), progress=False)
    train_set = TrainingSet(dataset, cache, tiny_sam, num_points=8, progress=False)
    config = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, pmm_points=8, checkpoint_every=2)
    result = train(
        tiny_sam,
        train_set,
        tmp_path / "run",
        config=config,
        adapter_config=AdapterConfig(task="rect"),
        model_type="samplm_tiny",
        progress=False,
    )
    prototype = TargetPrototype.load(result.adapter_dir)
    means, raw = [], []
    for item in train_set.items:  # each training mask's coverage of the (centred) embedding cells
        low_res = torch.as_tensor(item.target.low_res, dtype=torch.float32)[None, None]
        weights = torch.nn.functional.avg_pool2d(low_res, low_res.shape[-1] // train_set.grid)[0, 0]
        # 72 x 96 images in a 128 px input: 96 x 128, so the image cells (16 px) are rows 0-5
        assert tuple(cache.get(item.image_path).input_size) == (96, 128)
        cells = train_set.embedding(item).embedding[0].double()
        centred = cells - cells[:, :6, :].mean(dim=(1, 2))[:, None, None]
        means.append((centred * weights).sum(dim=(1, 2)) / weights.sum())
        raw.append((cells * weights).sum(dim=(1, 2)) / weights.sum())
    expected = torch.nn.functional.normalize(torch.stack(means).mean(0), dim=0).float()
    torch.testing.assert_close(prototype.vector, expected, rtol=0, atol=1e-5)
    uncentred = torch.nn.functional.normalize(torch.stack(raw).mean(0), dim=0).float()
    assert float((uncentred - expected).abs().max()) > 1e-2  # centring matters here
    with safe_open(str(result.adapter_dir / PROTOTYPE_NAME), framework="pt") as handle:
        assert json.loads(handle.metadata()[PROTOTYPE_HEADER_KEY])["features"] == "centred"
    assert (prototype.num_masks, prototype.task) == (len(train_set), "rect")
    assert prototype.encoder == sam_encoder_key(tiny_sam) == cache.key
    assert resolve_adapter(result.adapter_dir).prototype == result.adapter_dir / PROTOTYPE_NAME


# ---------------------------------------------------------------- the Hub


def test_prototype_travels_through_the_hub(capsys, hub_env, sam, folder, adapters, tmp_path):
    assert resolve_adapter(adapters["box"]).prototype == adapters["box"] / PROTOTYPE_NAME
    assert resolve_adapter(adapters["other"]).prototype is None
    for name in ("box", "other"):
        assert main(["push", str(adapters[name]), f"acme/seg-{name}", "--token", "hf_x"]) == 0
    capsys.readouterr()
    pushed = hub_env.repos["acme/seg-box"].commits[-1][1]
    assert PROTOTYPE_NAME in pushed and PROTOTYPE_NAME not in hub_env.repos["acme/seg-other"].commits[-1][1]
    assert pushed[PROTOTYPE_NAME] == (adapters["box"] / PROTOTYPE_NAME).read_bytes()

    resolved = resolve_adapter("acme/seg-box", cache_dir=tmp_path / "hf")
    assert resolved.prototype is not None and resolved.prototype.name == PROTOTYPE_NAME
    downloaded = TargetPrototype.load(resolved.prototype)
    assert torch.equal(downloaded.vector, TargetPrototype.load(adapters["box"]).vector)
    assert downloaded.task == "box"
    plain = resolve_adapter("acme/seg-other", cache_dir=tmp_path / "hf")
    assert plain.prototype is None and plain.weights.is_file()

    tasks, notes = make_tasks(CustomSamPredictor(sam), ["acme/seg-box", "acme/seg-other"])
    assert [t.generator.prompts for t in tasks] == ["prior", "grid"]
    assert len(notes) == 1 and "acme/seg-other" in notes[0]


def test_cli_fit_prototype_never_writes_over_an_adapter_file(capsys, folder, adapters):
    weights = adapters["other"] / WEIGHTS_NAME
    before = weights.read_bytes()
    argv = ["fit-prototype", "--images", str(folder / "images" / "0.png"), "--masks"]
    argv += [str(folder / "masks" / "0.png"), "--model-type", "samplm_tiny", "--device", "cpu"]
    err = _error(capsys, [*argv, "--adapter", str(weights), "--task", "x"])
    assert "--adapter" in err and "not an adapter directory" in err
    assert _error(capsys, [*argv, "--adapter", str(folder / "images")]).count("not an adapter directory") == 1
    assert weights.read_bytes() == before


# ---------------------------------------------------------------- overlays and the score cut-off


def _record(mask: np.ndarray, score: float) -> dict:
    """A results record of ``mask`` (as ``segment_images`` stores it) with ``score``."""
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return {"segmentation": to_coco_rle(mask), "bbox": bbox, "area": int(mask.sum()), "score": score}


def test_overlay_gives_each_instance_its_colour_and_score_and_draws_the_largest_first():
    from samplm.segment.jobs import PALETTE, overlay_image

    image = np.full((120, 160, 3), 100, np.uint8)
    large, small = np.zeros((120, 160), bool), np.zeros((120, 160), bool)
    large[30:110, 10:150] = True
    small[60:90, 60:100] = True  # inside the large one, of the same category
    drawn = overlay_image(image, [[_record(small, 0.5), _record(large, 0.9)]], ["box"])
    only_large, both = drawn[100, 130].astype(int), drawn[75, 80].astype(int)
    colour_small, colour_large = np.array(PALETTE[0]), np.array(PALETTE[1])  # best first: small, large
    np.testing.assert_allclose(only_large, 0.55 * 100 + 0.45 * colour_large, atol=1)
    # the small one drawn last, on top of the large one: its colour shows
    np.testing.assert_allclose(both, 0.55 * (0.55 * 100 + 0.45 * colour_large) + 0.45 * colour_small, atol=1)
    assert not np.allclose(only_large, both, atol=20)
    # the score is written next to each mask: another score draws other pixels, just above its box
    other = overlay_image(image, [[_record(small, 0.75), _record(large, 0.9)]], ["box"])
    changed = np.argwhere((other != drawn).any(axis=2))
    assert len(changed) and changed[:, 0].max() < 60 and changed[:, 1].min() >= 60


class _StubGenerator:
    """Two masks per image: a box (score 0.8) and the whole image (score 0.0)."""

    prompts = "prior"

    def settings(self):
        return {"stub": 1}

    def generate(self, image):
        box = np.zeros(image.shape[:2], bool)
        box[10:40, 10:44] = True
        whole = np.ones(image.shape[:2], bool)
        return [
            {
                **_record(box, 0.8),
                "segmentation": box,
                "predicted_iou": 0.9,
                "similarity": 0.9,
                "point_coords": [[20, 20]],
            },
            {
                **_record(whole, 0.0),
                "segmentation": whole,
                "predicted_iou": 0.9,
                "similarity": -0.2,
                "point_coords": [[5, 5]],
            },
        ]


def test_masks_below_the_score_cut_off_are_neither_kept_nor_drawn(sam, folder):
    from samplm.segment.jobs import SegmentTask
    from samplm.segment.settings import SegmentSettings

    assert SegmentSettings().min_score == 0.1 and "min_score" in json.dumps(asdict(SegmentSettings()))
    predictor, images = CustomSamPredictor(sam), _images(folder)[:1]
    tasks = [SegmentTask("box", None, _StubGenerator())]
    summary = segment_images(predictor, tasks, images, folder / "out", progress=False)
    results = json.loads((folder / "out" / "results.json").read_text())
    assert summary.masks == 1 and [r["score"] for r in results] == [0.8]  # the whole-image 0.0 is gone
    drawn = np.asarray(Image.open(next((folder / "out" / "overlays").iterdir())).convert("RGB"))
    original = load_image(images[0])
    np.testing.assert_array_equal(drawn[60:, :], original[60:, :])  # nothing drawn outside the box
    again = segment_images(predictor, tasks, images, folder / "all", progress=False, min_score=0.0)
    assert again.masks == 2
    changed = segment_images(predictor, tasks, images, folder / "out", progress=False, min_score=0.0)
    assert (changed.segmented, changed.masks) == (1, 2)  # another cut-off: not resumed
