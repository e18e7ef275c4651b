"""``CustomSamPredictor.predict_many``: one prompt, several adapters, one batched decoder call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import samplm.decoder.predict_many
from samplm import CustomSamPredictor, UnknownAdapterError
from samplm.adapter.config import PMMConfig
from samplm.decoder.decode import decode_with_adapters
from samplm.errors import AdapterOutputError, ImageNotSetError, PromptError, SamplmError

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = {
    "point": {"point_coords": [[40.0, 30.0]], "point_labels": [1]},
    "points": {"point_coords": [[40.0, 30.0], [100.0, 70.0]], "point_labels": [1, 0]},
    "box": {"box": [25.0, 15.0, 95.0, 65.0]},
    "point+box": {"point_coords": [[50.0, 40.0]], "point_labels": [1], "box": [25.0, 15.0, 95.0, 65.0]},
}


@pytest.fixture()
def predictor(tiny_sam, adapter_factory, image) -> CustomSamPredictor:
    predictor = CustomSamPredictor(tiny_sam)
    for index, task in enumerate(["nose", "mouth", "hair"]):
        adapter = adapter_factory(task, seed=index)
        with torch.no_grad():  # a fresh adapter is an identity: perturb so that each answers differently
            for parameter in adapter.parameters():
                parameter.add_(
                    0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(index))
                )
        predictor.load_adapter(adapter)
    predictor.set_image(image)
    return predictor


def _one_by_one(predictor: CustomSamPredictor, names, **prompt) -> dict:
    out = {}
    for name in names:
        with predictor.use_adapter(name):
            out[name] = predictor.predict(**prompt)
    return out


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
@pytest.mark.parametrize("multimask", [True, False])
def test_equals_a_loop_of_predict(predictor, prompt, multimask):
    names = [None, "nose", "mouth", "hair"]
    batched = predictor.predict_many(names, **PROMPTS[prompt], multimask_output=multimask)
    looped = _one_by_one(predictor, names, **PROMPTS[prompt], multimask_output=multimask)
    assert list(batched) == names
    for name in names:
        masks, scores, logits = batched[name]
        ref_masks, ref_scores, ref_logits = looped[name]
        assert masks.shape == ref_masks.shape and masks.dtype == ref_masks.dtype
        np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5, rtol=0)
        assert (masks == ref_masks).mean() > 0.999
    assert not np.allclose(batched["nose"][2], batched["mouth"][2])  # the adapters really differ
    assert not np.allclose(batched["nose"][2], batched[None][2])


def test_defaults_to_every_loaded_adapter_and_keeps_the_active_one(predictor):
    predictor.set_adapter("mouth")
    batched = predictor.predict_many(**PROMPTS["point"], return_logits=True)
    assert list(batched) == ["nose", "mouth", "hair"] and predictor.active_adapter == "mouth"
    assert batched["hair"][0].dtype == np.float32  # logits, not booleans


def test_needs_an_image_and_answers_an_empty_list_with_nothing(tiny_sam, adapter_factory, predictor):
    fresh = CustomSamPredictor(tiny_sam)
    fresh.load_adapter(adapter_factory("nose"))
    with pytest.raises(ImageNotSetError):
        fresh.predict_many(["nose"], **PROMPTS["point"])
    with pytest.raises(ImageNotSetError):
        fresh.predict_many([], **PROMPTS["point"])
    assert predictor.predict_many([], **PROMPTS["point"]) == {}
    with pytest.raises(PromptError):  # the prompt is checked even when no adapter is asked
        predictor.predict_many([], point_coords=[[1.0, 2.0]])


@pytest.mark.parametrize("weight", ["mlp.lin1.weight", "score_offset"])  # masks, then scores overflow
def test_refuses_unknown_adapters_and_reports_broken_ones(predictor, weight):
    with pytest.raises(UnknownAdapterError):
        predictor.predict_many(["nose", "eyebrow"], **PROMPTS["point"])
    with torch.no_grad():
        predictor.get_adapter("hair").plm.get_parameter(weight).fill_(float("inf"))
    with pytest.raises(AdapterOutputError, match="'hair'"):
        predictor.predict_many(["nose", "hair"], **PROMPTS["point"])
    with pytest.raises(AdapterOutputError, match="'hair'"):
        predictor.set_adapter("hair")
        predictor.predict(**PROMPTS["point"])


@pytest.mark.parametrize("cells", [None, 64])  # 64 cells: one adapter per decoder call on the 8 x 8 grid
def test_refine_gives_predict_refined_masks_for_adapters_with_a_pmm(
    predictor, adapter_factory, monkeypatch, cells
):
    if cells is not None:
        monkeypatch.setattr(samplm.decoder.predict_many, "CPU_DECODER_CELLS", cells)
        assert predictor._adapter_chunk() == 1
    predictor.load_adapter(adapter_factory("skin", seed=7, pmm=PMMConfig(num_points=12)))
    click = PROMPTS["point"]
    batched = predictor.predict_many([None, "nose", "skin"], **click, refine=True)
    with predictor.use_adapter("skin"):
        refined, scores, low_res, _ = predictor.predict_refined(**click)
    with predictor.use_adapter("nose"):
        plain_nose = predictor.predict(**click)
    np.testing.assert_allclose(batched["skin"][1], scores, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched["skin"][2], low_res, atol=1e-4, rtol=0)
    assert (batched["skin"][0] == refined).mean() > 0.999
    unrefined = predictor.predict_many(["skin"], **click)["skin"][0]
    assert not np.array_equal(unrefined, refined)  # refinement really moved the masks
    assert (batched["nose"][0] == plain_nose[0]).mean() > 0.999  # no PMM: the plain masks
    with pytest.raises(SamplmError, match="not logits"):
        predictor.predict_many(["skin"], **click, refine=True, return_logits=True)


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_decoding_in_chunks_equals_one_call(predictor, chunk):
    names = [None, "nose", "mouth", "hair"]
    placed = [predictor.get_adapter(n) if n else None for n in names]
    prompt = {
        "point_coords": torch.tensor([[[40.0, 30.0]]]),
        "point_labels": torch.tensor([[1]], dtype=torch.int),
    }
    args = (predictor.model, predictor.features, [a.plm if a else None for a in placed], [None] * 4)
    with torch.no_grad():
        whole = decode_with_adapters(*args, **prompt, return_image_features=True)
        parts = decode_with_adapters(*args, **prompt, return_image_features=True, chunk=chunk)
    assert parts.low_res_logits.shape == (4, 3, 32, 32) and parts.image_features.shape[0] == 4
    for field in ("low_res_logits", "iou_predictions", "image_features"):
        torch.testing.assert_close(getattr(parts, field), getattr(whole, field), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="chunk"):
        decode_with_adapters(*args, **prompt, chunk=0)


def test_chunk_size_follows_the_grid(predictor):
    assert predictor.model.prompt_encoder.image_embedding_size == (8, 8)
    assert predictor._adapter_chunk() == 128  # two 64 x 64 grids of cells in 8 x 8 grids
