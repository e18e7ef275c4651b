"""The packaged samplm_lite base: weights, geometry as SAM's predictor sees it, and real-photo behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from segment_anything import SamPredictor

from samplm import CustomSamPredictor
from samplm.base import MODEL_TYPES, build_sam, build_sam_lite, build_sam_without_image_encoder
from samplm.base.lite import LITE_GRID, LITE_IMAGE_SIZE, LITE_WEIGHTS_PATH

PERSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "perseg_persam_examples"


@pytest.fixture(scope="module")
def lite():
    return build_sam_lite()


def test_packaged_weights_are_float16_safetensors_under_25_mb_with_their_log():
    assert "samplm_lite" in MODEL_TYPES
    assert LITE_WEIGHTS_PATH.stat().st_size <= 25 * 1024 * 1024
    with safe_open(str(LITE_WEIGHTS_PATH), "pt") as f:
        assert f.metadata()["model_type"] == "samplm_lite"
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert dtypes == {"F16"}
    log = json.loads(LITE_WEIGHTS_PATH.with_suffix(".log.json").read_text())
    assert made_by_training_runs(log) and "plates" in log["final"]


def made_by_training_runs(log: dict) -> bool:
    """The log of a ``pretraining.lite.train`` run (steps taken on a corpus of views), or of a
    ``pretraining.lite.blend`` of two weight files whose logs are such logs. A run's weights saved at
    a check on the way are ``partial``: their steps are those of the last check."""
    if "blend" in log:
        return 0 <= log["blend"]["t"] <= 1 and all(made_by_training_runs(log[k]) for k in ("a_log", "b_log"))
    steps = log["evals"][-1]["step"] if log.get("partial") else log["steps"]
    return steps > 0 and log["corpus"]["views"] > 0


def test_lite_loads_strictly_and_embeds_like_sam(lite):
    assert not lite.training
    assert lite.image_encoder.img_size == LITE_IMAGE_SIZE
    assert lite.prompt_encoder.image_embedding_size == (LITE_GRID, LITE_GRID)
    assert lite.mask_decoder.transformer_dim == 256
    same = build_sam("samplm_lite")
    for a, b in zip(lite.state_dict().values(), same.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    predictor = SamPredictor(lite)
    predictor.set_image(np.zeros((300, 400, 3), np.uint8))
    assert predictor.features.shape == (1, 256, LITE_GRID, LITE_GRID)
    assert predictor.input_size == (384, 512)


def test_lite_without_image_encoder_keeps_the_decoder(lite):
    head = build_sam_without_image_encoder("samplm_lite")
    for name, tensor in head.mask_decoder.state_dict().items():
        assert torch.equal(tensor, lite.mask_decoder.state_dict()[name])
    with pytest.raises(RuntimeError, match="without its image encoder"):
        head.image_encoder(torch.zeros(1, 3, LITE_IMAGE_SIZE, LITE_IMAGE_SIZE))


@pytest.mark.skipif(not PERSEG.is_dir(), reason="the shared development data is not next to the repository")
def test_a_centre_click_on_a_real_photo_segments_the_object(lite):
    """On PerSeg's duck toy (a real photo), one of the three masks for a centre click is the toy."""
    from samplm.data import read_mask_folder
    from samplm.data.images import load_image
    from samplm.eval.metrics import iou
    from samplm.utils.geometry import center_point

    (instance, *_) = read_mask_folder(PERSEG / "Images", PERSEG / "Annotations", categories=["duck_toy"])
    image = load_image(instance.image_path)
    mask = instance.mask(*image.shape[:2])
    predictor = CustomSamPredictor(lite)
    predictor.set_image(image)
    masks, _, _ = predictor.predict(point_coords=np.array([center_point(mask)]), point_labels=np.array([1]))
    assert max(iou(m, mask) for m in masks) > 0.6  # measured: duck toy mean 0.81 over its 3 photos
