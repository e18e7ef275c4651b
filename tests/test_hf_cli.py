"""``--model-type hf``: ``samplm train`` and ``samplm eval`` end to end on a saved random transformers
``SamModel`` folder; the adapter records the SAM 1 family and the fingerprint of the same weights in
segment_anything."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers")

from samplm import PromptAdapter
from samplm.base import build_sam
from samplm.cli import main
from samplm.utils.fingerprint import sam_fingerprint


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A small SamModel (128 px input, 8 x 8 x 256 embedding) with seeded random weights, saved as
    transformers saves it (config.json + model.safetensors)."""
    from transformers import SamConfig, SamModel
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    vision = SamVisionConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=128,
        patch_size=16,
        mlp_dim=64,
        window_size=0,
        global_attn_indexes=[0],
    )
    prompt = SamPromptEncoderConfig(image_size=128, patch_size=16, image_embedding_size=8)
    model = SamModel(
        SamConfig(
            vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=SamMaskDecoderConfig()
        )
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # transformers initialises some weights near zero; give every matrix real values
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    folder = tmp_path_factory.mktemp("hf") / "sam-tiny"
    model.save_pretrained(folder)
    return folder


@pytest.fixture()
def data(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(5):
        image = rng.integers(0, 60, (60, 80, 3), dtype=np.uint8)
        mask = np.zeros((60, 80), np.uint8)
        mask[10 + 3 * i : 40 + 3 * i, 10 + 4 * i : 50 + 4 * i] = 1
        image[mask > 0] = (230, 200, 30)
        Image.fromarray(image).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    return tmp_path


def test_train_and_eval_on_a_transformers_sam_folder(capsys, hf_folder, data, tmp_path):
    common = ["--data", str(data / "masks"), "--images", str(data / "images"), "--format", "masks"]
    model = ["--model-type", "hf", "--checkpoint", str(hf_folder), "--cache", str(tmp_path / "cache")]
    run = tmp_path / "run"
    train = ["train", *common, *model, "--out", str(run), "--steps", "4", "--batch-size", "2"]
    assert main([*train, "--val-every", "2", "--val-fraction", "0.4"]) == 0
    assert "adapter written to" in capsys.readouterr().out
    adapter = PromptAdapter.load(run / "adapter")
    sam = build_sam("hf", hf_folder)
    assert adapter.config.base_model.family == "sam" and adapter.config.base_model.model_type == "hf"
    assert adapter.config.base_model.fingerprint == sam_fingerprint(sam)

    out = tmp_path / "eval"
    evaluate = ["eval", *common, *model, "--adapter", str(run / "adapter"), "--out", str(out), "--no-samf"]
    assert main(evaluate) == 0
    results = json.loads((out / "results.json").read_text())
    assert "run" in json.dumps(results)  # the adapter's row
    assert "| " in capsys.readouterr().out  # the printed table


def test_other_transformers_models_are_refused_in_one_line(capsys, tmp_path, data):
    from transformers import Sam2Config

    folder = tmp_path / "sam2"
    Sam2Config().save_pretrained(folder)
    argv = ["embed", "--data", str(data / "masks"), "--images", str(data / "images"), "--format", "masks"]
    assert main([*argv, "--model-type", "hf", "--checkpoint", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "SamAdapterModel" in err and "sam2" in err
