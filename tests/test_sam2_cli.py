"""``--model-type sam2.1_hiera_tiny``: ``samplm embed``, ``train``, ``eval``, ``fit-prototype`` and
``segment`` end to end on a saved random checkpoint in Meta's format (a dict holding ``"model"``). The
cache stores SAM 2's high-resolution maps beside the embedding, keyed by the SAM 2 encoder; the adapter
records the SAM 2 family and the checkpoint's fingerprint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("sam2")

from samplm import PromptAdapter
from samplm.base import SAM2_FAMILY, as_base
from samplm.base.meta_sam2 import build_sam2_model
from samplm.cache.embeddings import EmbeddingCache
from samplm.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
MODEL_TYPE = "sam2.1_hiera_tiny"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random ``sam2.1_hiera_tiny`` saved as Meta publishes its checkpoints: ``{"model": state_dict}``."""
    torch.manual_seed(0)
    model = build_sam2_model(MODEL_TYPE)
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(4):
        image = rng.integers(0, 60, (60, 80, 3), dtype=np.uint8)
        mask = np.zeros((60, 80), np.uint8)
        mask[10 + 3 * i : 40 + 3 * i, 10 + 4 * i : 50 + 4 * i] = 1
        image[mask > 0] = (230, 200, 30)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def test_embed_train_eval_and_segment_on_a_sam2_checkpoint(capsys, checkpoint, data, tmp_path):
    common = ["--data", str(data / "masks"), "--images", str(data / "images"), "--format", "masks"]
    cache = tmp_path / "cache"
    model = ["--model-type", MODEL_TYPE, "--checkpoint", str(checkpoint), "--cache", str(cache)]
    assert main(["embed", *common, *model]) == 0
    assert "4 embedded" in capsys.readouterr().out
    sam2 = build_sam2_model(MODEL_TYPE, checkpoint)
    base = as_base(sam2)
    entry = EmbeddingCache(cache, base.encoder_key()).get(data / "images" / "0.png")
    assert entry.embedding.shape == (1, 256, 64, 64)
    assert [tuple(level.shape) for level in entry.high_res] == [(1, 32, 256, 256), (1, 64, 128, 128)]

    run = tmp_path / "run"
    train = ["train", *common, *model, "--out", str(run), "--steps", "4", "--batch-size", "2"]
    assert main([*train, "--val-every", "2", "--val-fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "adapter written to" in out and "4 embedded" not in out  # every image came from the cache
    adapter = PromptAdapter.load(run / "adapter")
    assert "CustomSam2Predictor(sam)" in (run / "adapter" / "README.md").read_text()
    recorded = adapter.config.base_model
    assert (recorded.family, recorded.model_type) == (SAM2_FAMILY, MODEL_TYPE)
    assert recorded.fingerprint == base.fingerprint()

    evaluated = tmp_path / "eval"
    evaluate = ["eval", *common, *model, "--adapter", str(run / "adapter"), "--out", str(evaluated)]
    assert main(evaluate) == 0
    assert "| " in capsys.readouterr().out
    results = json.loads((evaluated / "results.json").read_text())
    assert "run" in json.dumps(results)  # the adapter's row

    fit = ["fit-prototype", "--images", str(data / "images" / "0.png")]
    fit += ["--masks", str(data / "masks" / "0.png")]
    assert main([*fit, "--adapter", str(run / "adapter"), *model[:4], "--device", "cpu"]) == 0
    segmented = tmp_path / "segment"
    segment = ["segment", "--adapter", str(run / "adapter"), "--images", str(data / "images")]
    segment += ["--out", str(segmented), *model[:4], "--device", "cpu", "--max-images", "2"]
    segment += ["--max-clicks", "2"]
    assert main([*segment, "--no-overlays"]) == 0
    assert "2 images: 2 segmented" in capsys.readouterr().out
    summary = json.loads((segmented / "summary.json").read_text())
    assert summary["prompts"] == {"run": "prior"} and summary["images"] == 2
    for record in json.loads((segmented / "results.json").read_text()):
        assert record["segmentation"]["size"] == [60, 80]


def test_a_sam2_model_type_needs_its_checkpoint(capsys, data):
    argv = ["embed", "--data", str(data / "masks"), "--images", str(data / "images"), "--format", "masks"]
    assert main([*argv, "--model-type", MODEL_TYPE]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--checkpoint" in err and MODEL_TYPE in err


def test_onnx_export_of_a_sam2_base_is_refused_in_one_line(capsys, checkpoint, tmp_path):
    argv = ["export", "--model-type", MODEL_TYPE, "--checkpoint", str(checkpoint)]
    assert main([*argv, "--out", str(tmp_path / "a.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--model-type sam2.1_hiera_tiny" in err and "CustomSam2Predictor" in err
    assert not (tmp_path / "a.onnx").exists()
