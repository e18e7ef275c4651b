"""The packaged samplm_tiny model, the banner generator, and the demo's expected result."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
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
    assert set(np.unique(labels)) <= {0, 1}  # one banner per image by default, as in the paper


def test_banner_images_carry_up_to_max_banners():
    rng = np.random.default_rng(2)
    counts = {len(make_banner_image(rng, 256, max_banners=3)[1]) for _ in range(30)}
    assert counts <= {1, 2, 3} and max(counts) >= 2
    rng = np.random.default_rng(2)
    assert all(len(make_banner_image(rng, 256)[1]) == 1 for _ in range(10))
    with pytest.raises(ValueError, match="max_banners"):
        write_banner_dataset("unused", 1, max_banners=0, progress=False)


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
    assert result.base_oracle >= result.base_top + 0.15  # SAM's ambiguity (measured: 0.405 vs 0.696)
    assert result.adapter >= result.base_top + 0.15  # the adapter customises the frozen base (0.633)
    adapter = PromptAdapter.load(result.adapter_dir)
    assert adapter.task == "banner" and adapter.pmm is not None
    assert adapter.config.base_model.model_type == "samplm_tiny"
    assert "SAM, oracle (best of 3)" in format_demo(result) and result.results.is_file()


def test_pretraining_runs_every_stage_of_the_recipe_and_writes_loadable_weights(tmp_path):
    import json

    from samplm.models.pretrain import RECIPE, pretrain

    out = tmp_path / "tiny.safetensors"
    info = pretrain(out, minutes=5, max_steps=[2, 1, 1], scenes=20, seed=0, images_per_step=2, progress=False)
    assert [stage["name"] for stage in info["stages"]] == [stage.name for stage in RECIPE]
    assert [stage["steps"] for stage in info["stages"]] == [2, 1, 1] and info["steps"] == 4
    assert [stage["seed"] for stage in info["stages"]] == [0, 1, 2]
    assert info["held_out"]["clicks"] > 0 and 0.0 <= info["held_out"]["best_vs_whole"] <= 1.0
    assert build_sam_tiny(out).image_encoder.img_size == 256  # loads strictly into the architecture
    log = json.loads(out.with_suffix(".log.json").read_text())
    assert log["info"] == info and len(log["loss_curves"]) == len(RECIPE)


def test_pretraining_command_line_runs_chosen_stages_from_init(tmp_path):
    """`--stages 3 --init w` runs only the decoder-only stage: the image encoder stays as it was."""
    import json
    import subprocess
    import sys

    from samplm.models.loading import load_state_dict
    from samplm.models.pretrain import RECIPE, pretrain

    init = tmp_path / "init.safetensors"
    pretrain(init, minutes=5, max_steps=[1], stages=RECIPE[:1], scenes=20, images_per_step=2, progress=False)
    out = tmp_path / "stage3.safetensors"
    base = [sys.executable, "-m", "samplm.models.pretrain", "--out", str(out), "--scenes", "20"]
    command = [
        *base,
        "--init",
        str(init),
        "--stages",
        "3",
        "--max-steps",
        "2",
        "--seed",
        "7",
        "--device",
        "cpu",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    info = json.loads(out.with_suffix(".log.json").read_text())["info"]
    assert info["init"] == str(init) and info["seed"] == 7 and info["device"] == "cpu"
    (stage,) = info["stages"]
    assert stage["name"] == RECIPE[2].name and stage["decoder_only"] and stage["steps"] == 2
    assert stage["seed"] == 7 and stage["plates"] == RECIPE[2].plates
    before, after = load_state_dict(init), load_state_dict(out)
    encoder = [k for k in before if k.startswith("image_encoder.")]
    decoder = [k for k in before if k.startswith("mask_decoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    # one step cap per stage, or a clear error
    wrong = subprocess.run([*base, "--max-steps", "1", "2"], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "one value per stage" in wrong.stderr
