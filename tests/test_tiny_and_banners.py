"""The packaged samplm_tiny model, the banner generator, and the demo's expected result."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from samplm.data import read_mask_folder
from samplm.data.synthetic import make_banner_image, make_scene, write_banner_dataset
from samplm.models import build_sam, build_sam_tiny
from samplm.models.tiny import WEIGHTS_PATH

REDUCED_IMAGES = 60
REDUCED_STEPS = 150


def test_packaged_weights_load_strictly_and_are_small():
    assert WEIGHTS_PATH.is_file() and WEIGHTS_PATH.stat().st_size < 25 * 1024 * 1024
    sam = build_sam_tiny()
    assert sam.image_encoder.img_size == 256 and sam.prompt_encoder.image_embedding_size == (16, 16)
    assert sam.prompt_encoder.embed_dim == 256 and sam.mask_decoder.transformer_dim == 256
    assert not sam.training
    same = build_sam("samplm_tiny")
    for a, b in zip(sam.state_dict().values(), same.state_dict().values(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy())


def test_banner_generator_is_deterministic_with_exact_masks(tmp_path):
    a = write_banner_dataset(tmp_path / "a", 4, seed=3, progress=False)
    b = write_banner_dataset(tmp_path / "b", 4, seed=3, progress=False)
    c = write_banner_dataset(tmp_path / "c", 4, seed=4, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 8
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    dataset = read_mask_folder(a / "images", a / "masks")
    assert dataset.categories == ["banner"] and len(dataset) >= 4
    rng = np.random.default_rng(0)
    image, masks = make_banner_image(rng, 256)
    assert image.shape == (256, 256, 3) and masks and all(m.dtype == bool and m.sum() >= 200 for m in masks)
    labels = np.asarray(Image.open(a / "masks" / "banner" / "0000.png"))
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_scene_objects_have_parts_inside_wholes():
    rng = np.random.default_rng(1)
    found_parts = 0
    for _ in range(10):
        _, objects = make_scene(rng, 256)
        for obj in objects:
            for part in obj.parts:
                assert not (part & ~obj.whole).any()  # every part lies inside its whole
                found_parts += 1
    assert found_parts > 5


def test_plates_are_solid_central_parts_that_keep_the_default_corpus_unchanged():
    from samplm.data.synthetic import paste_object, procedural_background

    def draw(plates: float, seed: int):
        rng = np.random.default_rng(seed)
        image = procedural_background(rng, 256)
        return image, paste_object(image, [], rng, shape="rect", plates=plates)

    for plates in (0.0, 1.0):  # deterministic for a seed
        (a, obj_a), (b, obj_b) = draw(plates, 5), draw(plates, 5)
        assert np.array_equal(a, b) and np.array_equal(obj_a.whole, obj_b.whole)
    for seed in range(5):
        _, obj = draw(1.0, seed)
        plate = obj.parts[0]
        assert not (plate & ~obj.whole).any()
        # a plate is one solid region, unlike a string's strokes
        count, _ = cv2.connectedComponents(plate.astype(np.uint8))
        assert count == 2
        assert 0.05 < plate.sum() / obj.whole.sum() < 0.8


def test_demo_reduced_size(tmp_path):
    """`samplm demo` end to end at reduced size: data, cache, adapter, evaluation, report.

    The frozen base is ambiguous on banners (its most confident mask for a centre click is the
    banner's plate, text or logo, far below its oracle), and the adapter moves it towards the banner.
    """
    from samplm import PromptAdapter
    from samplm.demo import format_demo, run_demo

    result = run_demo(tmp_path, images=REDUCED_IMAGES, steps=REDUCED_STEPS, progress=False, visuals=1)
    for value in (result.base_top, result.base_oracle, result.adapter, result.samf, result.refined):
        assert 0.0 <= value <= 1.0
    assert result.base_oracle >= result.base_top + 0.15  # SAM's ambiguity (measured: 0.439 vs 0.690)
    assert result.adapter >= result.base_top + 0.03  # the adapter customises the frozen base (0.504)
    adapter = PromptAdapter.load(result.adapter_dir)
    assert adapter.task == "banner" and adapter.pmm is not None
    assert adapter.config.base_model.model_type == "samplm_tiny"
    assert "SAM, oracle (best of 3)" in format_demo(result) and result.results.is_file()


def test_pretraining_script_runs_and_writes_loadable_weights(tmp_path):
    from samplm.models.pretrain import pretrain

    out = tmp_path / "tiny.safetensors"
    info = pretrain(out, minutes=5, max_steps=2, scenes=30, seed=0, backgrounds=[], images_per_step=2)
    assert info["steps"] == 2 and info["held_out"]["clicks"] > 0
    assert 0.0 <= info["held_out"]["best_vs_whole"] <= 1.0
    assert build_sam_tiny(out).image_encoder.img_size == 256  # loads strictly into the architecture
    assert out.with_suffix(".log.json").is_file()


def test_pretraining_command_line_passes_every_option(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "stage.safetensors"
    init = tmp_path / "init.safetensors"
    from samplm.models.pretrain import pretrain

    pretrain(init, minutes=5, max_steps=1, scenes=30, seed=0, backgrounds=[], images_per_step=2)
    command = [
        sys.executable,
        "-m",
        "samplm.models.pretrain",
        "--out",
        str(out),
        "--init",
        str(init),
        "--max-steps",
        "1",
        "--scenes",
        "30",
        "--lr",
        "1e-4",
        "--warmup",
        "5",
        "--part-probability",
        "0.9",
        "--part-clicks",
        "0.8",
        "--close-parts",
        "7",
        "--decoder-only",
        "--prompts-per-scene",
        "2",
        "--plates",
        "0.7",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    info = json.loads(out.with_suffix(".log.json").read_text())["info"]
    expected = {
        "init": str(init),
        "lr": 1e-4,
        "warmup": 5,
        "part_probability": 0.9,
        "part_clicks": 0.8,
        "close_parts": 7,
        "decoder_only": True,
        "prompts_per_scene": 2,
        "plates": 0.7,
        "steps": 1,
    }
    assert {k: info[k] for k in expected} == expected
