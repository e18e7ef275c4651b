"""The samplm_tiny pretraining tools (``pretraining/tiny``) and the synthetic scenes they learn from."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from pretraining.scenes import make_scene
from samplm.base import build_sam_tiny

REPO = Path(__file__).resolve().parents[1]


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


def test_pretraining_runs_every_stage_of_the_recipe_and_writes_loadable_weights(tmp_path):
    import json

    from pretraining.tiny.train import RECIPE, pretrain

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

    from pretraining.tiny.train import RECIPE, pretrain
    from samplm.base.loading import load_state_dict

    init = tmp_path / "init.safetensors"
    pretrain(init, minutes=5, max_steps=[1], stages=RECIPE[:1], scenes=20, images_per_step=2, progress=False)
    out = tmp_path / "stage3.safetensors"
    base = [sys.executable, "-m", "pretraining.tiny.train", "--out", str(out), "--scenes", "20"]
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
    subprocess.run(command, check=True, capture_output=True, timeout=300, cwd=REPO)
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
    wrong = subprocess.run(
        [*base, "--max-steps", "1", "2"], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert wrong.returncode == 2 and "one value per stage" in wrong.stderr
