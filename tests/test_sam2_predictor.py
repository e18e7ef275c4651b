"""CustomSam2Predictor on a random ``sam2.1_hiera_tiny`` built from the sam2 package's own config:
bit-identical to ``SAM2ImagePredictor`` with no adapter or a fresh one, a trained adapter changes the answer,
save -> load -> predict gives the same masks, a SAM 1 adapter is refused in one line, predict_many equals
the loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from sam2.sam2_image_predictor import SAM2ImagePredictor

from samplm import AdapterCompatibilityError, AdapterConfig, CustomSam2Predictor, PMMConfig, PromptAdapter
from samplm.base import SAM2_FAMILY, as_base
from samplm.base.meta_sam2 import Sam2Base, build_sam2_model
from samplm.errors import SamplmError

# sam2's SAM2Transforms scripts its resize with torch.jit.script, which torch now warns about
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

CLICK = {"point_coords": np.array([[120.0, 70.0], [40.0, 150.0]]), "point_labels": np.array([1, 0])}
BOX = np.array([30.0, 20.0, 230.0, 170.0])


@pytest.fixture(scope="module")
def sam2_model():
    torch.manual_seed(0)
    return build_sam2_model("sam2.1_hiera_tiny")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(180, 260, 3), dtype=np.uint8)
    pixels[40:140, 60:200] = (200, 60, 40)  # a block for the masks to find
    return pixels


@pytest.fixture(scope="module")
def predictors(sam2_model, image):
    upstream, custom = SAM2ImagePredictor(sam2_model), CustomSam2Predictor(sam2_model)
    upstream.set_image(image)
    custom.set_image(image)
    return upstream, custom


def trained_adapter(model, task: str = "trained", seed: int = 1) -> PromptAdapter:
    """An adapter with random non-zero PLM weights and offsets, bound to ``model``."""
    adapter = PromptAdapter(AdapterConfig(task=task))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.plm.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    adapter.bind_base_model(model, model_type="sam2.1_hiera_tiny")
    return adapter


def equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


PROMPTS = {
    "click": CLICK,
    "box": {"box": BOX},
    "box and click": {"box": BOX, **CLICK},
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_off_and_fresh_are_bit_identical_to_sam2(predictors, sam2_model, prompt, multimask):
    upstream, custom = predictors
    expected = upstream.predict(**PROMPTS[prompt], multimask_output=multimask)
    with custom.disable_adapter():
        assert equal(custom.predict(**PROMPTS[prompt], multimask_output=multimask), expected)
    fresh = PromptAdapter(AdapterConfig(task="fresh"))
    fresh.bind_base_model(sam2_model)
    custom.load_adapter(fresh, replace=True, activate=True)
    assert custom.active_adapter == "fresh"
    assert equal(custom.predict(**PROMPTS[prompt], multimask_output=multimask), expected)
    unbound = PromptAdapter(AdapterConfig(task="unbound"))  # records no base: runs on any family
    custom.load_adapter(unbound, replace=True, activate=True)
    assert equal(custom.predict(**PROMPTS[prompt], multimask_output=multimask), expected)
    # a mask from the previous answer as input, and logits instead of masks
    mask_input = expected[2][:1]
    again = upstream.predict(**CLICK, mask_input=mask_input, multimask_output=multimask, return_logits=True)
    assert equal(
        custom.predict(**CLICK, mask_input=mask_input, multimask_output=multimask, return_logits=True), again
    )


def test_trained_adapter_changes_the_answer_and_survives_save_load(predictors, sam2_model, image, tmp_path):
    upstream, custom = predictors
    adapter = trained_adapter(sam2_model)
    custom.load_adapter(adapter, replace=True, activate=True)
    answer = custom.predict(**CLICK)
    plain = upstream.predict(**CLICK)
    assert not np.array_equal(answer[2], plain[2])
    assert not np.array_equal(answer[1], plain[1])
    adapter.save_pretrained(tmp_path / "trained")
    loaded = PromptAdapter.load(tmp_path / "trained")
    assert loaded.config.base_model.family == SAM2_FAMILY
    other = CustomSam2Predictor(sam2_model, strict=True)
    other.load_adapter(tmp_path / "trained")
    other.set_image(image)
    assert equal(other.predict(**CLICK), answer)


def test_predict_many_equals_the_loop(predictors, sam2_model):
    _, custom = predictors
    custom.load_adapter(trained_adapter(sam2_model, "first", 1), replace=True)
    custom.load_adapter(trained_adapter(sam2_model, "second", 2), replace=True)
    many = custom.predict_many(["first", None, "second"], **CLICK)
    for name in ("first", None, "second"):
        with custom.use_adapter(name):
            masks, scores, low_res = custom.predict(**CLICK)
        np.testing.assert_allclose(many[name][1], scores, atol=1e-5)
        np.testing.assert_allclose(many[name][2], low_res, atol=1e-4)
        assert (many[name][0] != masks).mean() < 1e-4


def test_sam1_adapter_is_refused_in_one_line(sam2_model, sam):
    adapter = PromptAdapter(AdapterConfig(task="sam1"))
    adapter.bind_base_model(sam)
    predictor = CustomSam2Predictor(sam2_model)
    with pytest.raises(AdapterCompatibilityError) as info:
        predictor.load_adapter(adapter)
    message = str(info.value)
    assert "\n" not in message and "SAM 1" in message and "SAM 2" in message
    legacy = PromptAdapter(AdapterConfig(task="legacy"))  # a file from before families: SAM 1's
    legacy.config.base_model.model_type = "vit_b"
    with pytest.raises(AdapterCompatibilityError):
        predictor.load_adapter(legacy)


def test_features_path_keeps_the_masks(sam2_model, predictors):
    """The step-by-step decoder (PMM features) gives the decoder's own masks and scores."""
    _, custom = predictors
    base = as_base(sam2_model)
    assert isinstance(base, Sam2Base)
    features = custom.image_features()
    coords = torch.tensor([[[500.0, 400.0]]])
    labels = torch.ones(1, 1, dtype=torch.int)
    sparse, dense = base.encode_prompts(coords, labels, None, None)
    for multimask in (True, False):
        plain = base.run_decoder(features, sparse, dense, multimask)
        stepwise = base.run_decoder(features, sparse, dense, multimask, return_image_features=True)
        assert torch.equal(plain.low_res_logits, stepwise.low_res_logits)
        assert torch.equal(plain.iou_predictions, stepwise.iou_predictions)
        assert stepwise.image_features.shape == (1, 256, 64, 64)


def test_fingerprint_and_encoder_key_follow_the_weights(sam2_model):
    base = Sam2Base(sam2_model)
    fingerprint, key = base.fingerprint(), base.encoder_key()
    other = build_sam2_model("sam2.1_hiera_tiny")  # other random weights
    assert Sam2Base(other).fingerprint() != fingerprint
    assert Sam2Base(other).encoder_key() != key
    assert base.fingerprint() == fingerprint and base.encoder_key() == key


def test_predict_refined_refines_the_adapters_masks_as_predict_many_does(sam2_model, image):
    predictor = CustomSam2Predictor(sam2_model)
    predictor.set_image(image)
    adapter = PromptAdapter(AdapterConfig(task="with-pmm", pmm=PMMConfig(num_points=12)))
    adapter.bind_base_model(sam2_model, model_type="sam2.1_hiera_tiny")
    predictor.load_adapter(adapter, activate=True)
    masks, scores, low_res, polygons = predictor.predict_refined(**CLICK)
    plain_masks, plain_scores, plain_low_res = predictor.predict(**CLICK)
    assert masks.shape == plain_masks.shape == (3, *image.shape[:2]) and masks.dtype == bool
    np.testing.assert_allclose(scores, plain_scores, atol=1e-6)
    np.testing.assert_allclose(low_res, plain_low_res, atol=1e-5)
    assert len(polygons) == 3 and all(p.shape == (12, 2) for parts in polygons for p in parts)
    many = predictor.predict_many(["with-pmm"], **CLICK, refine=True)["with-pmm"][0]
    assert (many != masks).mean() < 1e-3
    with predictor.disable_adapter(), pytest.raises(SamplmError, match="active adapter"):
        predictor.predict_refined(**CLICK)
