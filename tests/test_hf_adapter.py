"""samplm.hf: adapters on transformers' SAMs (SamModel, Sam2Model, Sam3TrackerModel), and the
segment_anything <-> SamModel key map ("one adapter, two libraries")."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from samplm import AdapterConfig, PromptAdapter  # noqa: E402
from samplm.adapter import PLMConfig  # noqa: E402
from samplm.decoder.decode import decode_prompts  # noqa: E402
from samplm.errors import AdapterCompatibilityError  # noqa: E402
from samplm.hf import (  # noqa: E402
    SamAdapterModel,
    hf_from_segment_anything,
    hf_to_sam_state,
    sam_to_hf_state,
    segment_anything_from_hf,
)
from samplm.utils.fingerprint import sam_fingerprint  # noqa: E402

WIDTH = 32  # prompt / decoder width of the small models
IMAGE = 128  # their input side; 8 x 8 embeddings, 32 x 32 low-res masks
FAMILIES = ("sam", "sam2", "sam3_tracker")
PROMPTS = ("points", "boxes", "points+boxes", "masks", "pixels")


# ---------------------------------------------------------------------------------------------- models
def _small_sam_config(**vision: object):
    return transformers.SamConfig(
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_dim=64,
            image_size=IMAGE,
            window_size=4,
            global_attn_indexes=[1],
            output_channels=WIDTH,
            num_pos_feats=WIDTH // 2,
            **vision,
        ),
        prompt_encoder_config=dict(hidden_size=WIDTH, image_size=IMAGE),
        mask_decoder_config=dict(
            hidden_size=WIDTH, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=WIDTH
        ),
    )


def _small_sam2_config(config_class, model_type: str):
    decoder = dict(hidden_size=WIDTH, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=WIDTH)
    if model_type == "sam2_hiera_det_model":
        backbone = dict(
            hidden_size=8,
            image_size=[IMAGE, IMAGE],
            blocks_per_stage=[1, 1, 2, 1],
            embed_dim_per_stage=[8, 16, 32, 64],
            num_attention_heads_per_stage=[1, 1, 1, 1],
            window_size_per_stage=[4, 4, 4, 4],
            global_attention_blocks=[3],
            window_positional_embedding_background_size=[2, 2],
        )
        vision = dict(backbone_channel_list=[64, 32, 16, 8])
        image, patch = IMAGE, 16
    else:  # SAM 3's ViT: 112 px in 14 px patches, so the same 8 x 8 grid
        backbone = dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=112,
            patch_size=14,
            window_size=4,
            global_attn_indexes=[1],
            pretrain_image_size=56,
        )
        vision, image, patch = {}, 112, 14
    return config_class(
        vision_config=dict(
            backbone_config=dict(model_type=model_type, **backbone),
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
            fpn_hidden_size=WIDTH,
            **vision,
        ),
        prompt_encoder_config=dict(hidden_size=WIDTH, image_size=image, patch_size=patch),
        mask_decoder_config=decoder,
    )


def _build(family: str, seed: int = 0):
    torch.manual_seed(seed)
    if family == "sam":
        model = transformers.SamModel(_small_sam_config())
    elif family == "sam2":
        model = transformers.Sam2Model(_small_sam2_config(transformers.Sam2Config, "sam2_hiera_det_model"))
    else:
        model = transformers.Sam3TrackerModel(
            _small_sam2_config(transformers.Sam3TrackerConfig, "sam3_vit_model")
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # transformers initialises weights near zero: give every matrix real values
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
    """One torch thread for this module's small tensors (restored after it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models():
    """One small model per family (random weights, a fixed seed)."""
    return {family: _build(family) for family in FAMILIES}


@pytest.fixture(scope="module")
def vit_b_pair():
    """``(segment_anything vit_b, the same weights as a transformers SamModel)``, random weights (seed 0)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"]().eval()
    config = transformers.SamConfig(
        vision_config=dict(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, global_attn_indexes=[2, 5, 8, 11]
        )
    )
    return sam, hf_from_segment_anything(sam, config)


def _adapter(
    task: str = "task", *, trained: bool = True, seed: int = 0, width: int = WIDTH, base: object = None
) -> PromptAdapter:
    """A fresh adapter (an exact identity), or one with random non-zero weights (as if trained); bound to
    ``base`` when given (an adapter without a recorded family is a SAM 1 one)."""
    adapter = PromptAdapter(AdapterConfig(task=task, plm=PLMConfig(embed_dim=width, num_heads=2, mlp_dim=64)))
    if base is not None:
        adapter.bind_base_model(base)
    if trained:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in adapter.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
            adapter.plm.norm_out.weight.add_(1.0)
            adapter.plm.mask_mix.add_(torch.eye(3))
    return adapter


def _inputs(model, kind: str, *, batch: int = 1) -> dict:
    """Keyword arguments of the wrapped model: 2 prompts per image of the given kind."""
    generator = torch.Generator().manual_seed(1)
    side = model.config.prompt_encoder_config.image_size
    points = torch.rand(batch, 2, 3, 2, generator=generator) * side
    labels = torch.tensor([[1, 0, -10], [1, 1, 0]]).expand(batch, 2, 3).contiguous()
    boxes = (
        torch.tensor([[10.0, 12.0, 90.0, 70.0], [30.0, 5.0, 60.0, 100.0]]).expand(batch, 2, 4).contiguous()
    )
    inputs: dict = {}
    if kind == "pixels":
        inputs["pixel_values"] = torch.randn(batch, 3, side, side, generator=generator)
    else:
        pixels = torch.randn(batch, 3, side, side, generator=generator)
        inputs["image_embeddings"] = model.get_image_embeddings(pixels)
    if kind in ("points", "points+boxes", "masks", "pixels"):
        inputs.update(input_points=points, input_labels=labels)
    if kind in ("boxes", "points+boxes"):
        inputs["input_boxes"] = boxes
    if kind == "masks":
        size = 4 * model.prompt_encoder.image_embedding_size[0]
        inputs["input_masks"] = torch.randn(batch, 1, size, size, generator=generator)
    return inputs


def _assert_same(actual, expected) -> None:
    assert type(actual) is type(expected)
    assert torch.equal(actual.pred_masks, expected.pred_masks)
    assert torch.equal(actual.iou_scores, expected.iou_scores)
    if hasattr(expected, "object_score_logits"):
        assert torch.equal(actual.object_score_logits, expected.object_score_logits)


# ---------------------------------------------------------------------------------------------- identity
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("kind", PROMPTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_no_adapter_and_a_fresh_adapter_are_bit_identical_to_the_wrapped_model(
    models, family, kind, multimask
):
    model = models[family]
    inputs = _inputs(model, kind)
    with torch.no_grad():
        expected = model(**inputs, multimask_output=multimask)
        wrapper = SamAdapterModel(model)
        _assert_same(wrapper(**inputs, multimask_output=multimask), expected)
        wrapper.load_adapter(_adapter(trained=False, base=wrapper))
        assert wrapper.active_adapter == "task"
        _assert_same(wrapper(**inputs, multimask_output=multimask), expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_images_with_two_prompts_each_are_bit_identical_too(models, family):
    model = models[family]
    inputs = _inputs(model, "points", batch=2)
    wrapper = SamAdapterModel(model)
    wrapper.load_adapter(_adapter(trained=False, base=wrapper))
    with torch.no_grad():
        _assert_same(wrapper(**inputs), model(**inputs))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_image_of_a_batch_is_adapted_as_if_alone(models, family):
    """The PLM's per-image context goes to that image's prompts (``b x P`` rows in order)."""
    model = models[family]
    inputs = _inputs(model, "points", batch=2)
    inputs["input_points"][1] = inputs["input_points"][1].flip(-1)  # other clicks on the second image
    wrapper = SamAdapterModel(model)
    wrapper.load_adapter(_adapter(base=wrapper))
    with torch.no_grad():
        both = wrapper(**inputs)
        for i in range(2):
            alone = {
                key: value[i : i + 1]
                if isinstance(value, torch.Tensor)
                else [level[i : i + 1] for level in value]
                for key, value in inputs.items()
            }
            one = wrapper(**alone)
            torch.testing.assert_close(both.pred_masks[i : i + 1], one.pred_masks, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(both.iou_scores[i : i + 1], one.iou_scores, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_and_width_describe_the_wrapped_model(models, family):
    wrapper = SamAdapterModel(models[family])
    assert wrapper.family == family
    assert wrapper.embed_dim == WIDTH
    assert wrapper.fingerprint().startswith("sha256:") and len(wrapper.fingerprint()) == 7 + 64
    assert wrapper.fingerprint() != SamAdapterModel(_build(family, seed=1)).fingerprint()


# ---------------------------------------------------------------------------------------------- adapters
@pytest.mark.parametrize("family", FAMILIES)
def test_a_trained_adapter_changes_the_outputs_and_disable_adapter_restores_them(models, family):
    model = models[family]
    inputs = _inputs(model, "points")
    wrapper = SamAdapterModel(model)
    wrapper.load_adapter(_adapter(base=wrapper), "trained")
    with torch.no_grad():
        plain, adapted = model(**inputs), wrapper(**inputs)
        with wrapper.disable_adapter():
            assert wrapper.active_adapter is None
            _assert_same(wrapper(**inputs), plain)
        again = wrapper(**inputs)
    assert wrapper.active_adapter == "trained"
    assert adapted.pred_masks.shape == plain.pred_masks.shape
    assert (adapted.pred_masks - plain.pred_masks).abs().max() > 0.1 * plain.pred_masks.abs().max()
    assert (adapted.iou_scores - plain.iou_scores).abs().max() > 1e-2
    assert torch.equal(again.pred_masks, adapted.pred_masks)


def test_the_context_of_an_image_is_reused_until_the_embedding_changes(models, monkeypatch):
    model = models["sam2"]
    inputs = _inputs(model, "points")
    wrapper = SamAdapterModel(model)
    wrapper.load_adapter(_adapter(base=wrapper))
    plm = wrapper.get_adapter("task").plm
    calls = []
    original = plm.image_context
    monkeypatch.setattr(plm, "image_context", lambda *args: calls.append(1) or original(*args))
    with torch.no_grad():
        first = wrapper(**inputs)
        _assert_same(wrapper(**inputs), first)
        assert len(calls) == 1
        inputs["image_embeddings"][-1].mul_(2.0)  # in place: the context is computed again
        changed = wrapper(**inputs)
        assert len(calls) == 2
        fresh = SamAdapterModel(model)
        fresh.load_adapter(_adapter(base=fresh))
        _assert_same(changed, fresh(**inputs))
        wrapper(**_inputs(model, "pixels"))  # computed embeddings: a context each call, none kept
        wrapper(**inputs)
    assert len(calls) == 3


@pytest.mark.parametrize("family", FAMILIES)
def test_an_adapter_runs_under_inference_mode_as_under_no_grad(models, family):
    model = models[family]
    inputs = _inputs(model, "points")
    wrapper = SamAdapterModel(model)
    wrapper.load_adapter(_adapter(base=wrapper), "trained")
    with torch.no_grad():
        expected = wrapper(**inputs)
    with torch.inference_mode():  # inference tensors have no version counter
        frozen = {k: _cloned(v) for k, v in inputs.items()}
        first, again = wrapper(**frozen), wrapper(**frozen)
    _assert_same(first, expected)
    _assert_same(again, expected)


def _cloned(value):
    """``value`` copied (a tensor, or a list of tensors as SAM 2's embeddings), as tensors made now."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    return [v.clone() for v in value] if isinstance(value, list) else value


def test_adapters_are_named_switched_and_unloaded(models):
    wrapper = SamAdapterModel(models["sam"])
    inputs = _inputs(models["sam"], "points")
    assert wrapper.load_adapter(_adapter("a", seed=1)) == "a"
    assert wrapper.load_adapter(_adapter("b", seed=2)) == "b"
    assert wrapper.adapters == ["a", "b"] and wrapper.active_adapter == "a"
    with torch.no_grad():
        first = wrapper(**inputs).pred_masks
        wrapper.set_adapter("b")
        second = wrapper(**inputs).pred_masks
        wrapper.unload_adapter("b")
        plain = wrapper(**inputs).pred_masks
    assert wrapper.adapters == ["a"] and wrapper.active_adapter is None
    assert not torch.equal(first, second)
    assert torch.equal(plain, models["sam"](**inputs).pred_masks)


def test_an_adapter_saved_and_loaded_gives_the_same_outputs(models, tmp_path):
    model = models["sam2"]
    wrapper = SamAdapterModel(model)
    adapter = _adapter("banner", seed=3)
    adapter.bind_base_model(wrapper, model_type="hf")
    assert adapter.config.base_model.family == "sam2"
    assert adapter.config.base_model.fingerprint == wrapper.fingerprint()
    adapter.save_pretrained(tmp_path / "banner")
    wrapper.load_adapter(adapter, "in-memory")
    loaded = SamAdapterModel(model, strict=True)
    loaded.load_adapter(PromptAdapter.load(tmp_path / "banner"))
    inputs = _inputs(model, "points+boxes")
    with torch.no_grad():
        _assert_same(loaded(**inputs, multimask_output=False), wrapper(**inputs, multimask_output=False))
        _assert_same(loaded(**inputs), wrapper(**inputs))


def test_an_adapter_of_another_family_is_refused_in_one_line_naming_both(models):
    adapter = _adapter("nose")
    adapter.bind_base_model(SamAdapterModel(models["sam2"]))
    wrapper = SamAdapterModel(models["sam"])
    with pytest.raises(AdapterCompatibilityError) as info:
        wrapper.load_adapter(adapter)
    message = str(info.value)
    assert "\n" not in message and "sam2" in message and re.search(r"\bsam\b", message)
    assert wrapper.adapters == []


def test_a_different_fingerprint_warns_or_with_strict_raises(models):
    adapter = _adapter("nose")
    adapter.bind_base_model(SamAdapterModel(_build("sam", seed=1)))
    with pytest.warns(UserWarning, match="fingerprint"):
        SamAdapterModel(models["sam"]).load_adapter(adapter)
    with pytest.raises(AdapterCompatibilityError, match="fingerprint"):
        SamAdapterModel(models["sam"], strict=True).load_adapter(adapter)


def test_inputs_of_the_wrong_shape_are_refused_in_one_line(models):
    model = models["sam"]
    inputs = _inputs(model, "points+boxes")
    wrapper = SamAdapterModel(model)
    wrong = {
        "input_points": inputs["input_points"][0],
        "input_boxes": inputs["input_boxes"][:, :1],
        "image_embeddings": None,
    }
    for key, value in wrong.items():
        with pytest.raises(ValueError) as info:
            wrapper(**{**inputs, key: value})
        assert "\n" not in str(info.value)


def test_samhq_and_other_models_are_refused_in_one_line():
    with pytest.raises(TypeError) as info:
        SamAdapterModel(torch.nn.Linear(2, 2))
    assert "SamModel" in str(info.value) and "\n" not in str(info.value)
    hq = transformers.SamHQModel(
        transformers.SamHQConfig(
            vision_config=dict(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1]
            )
        )
    )
    with pytest.raises(TypeError, match="SamHQModel is not supported"):
        SamAdapterModel(hq)


# ---------------------------------------------------------------------------------------------- processors
def test_the_sam_processor_post_processes_the_wrappers_output(models):
    model = models["sam"]
    processor = transformers.SamProcessor(
        transformers.SamImageProcessor(
            size={"longest_edge": IMAGE}, pad_size={"height": IMAGE, "width": IMAGE}
        )
    )
    image = (torch.rand(90, 120, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    inputs = processor(images=image, input_points=[[[60, 40]]], return_tensors="pt")
    wrapper = SamAdapterModel(model)
    wrapper.load_adapter(_adapter())
    with torch.no_grad():  # everything the processor returns, as the wrapped model takes it
        outputs = wrapper(**inputs)
        plain = model(**inputs)
    assert type(outputs) is type(plain) and not torch.equal(outputs.pred_masks, plain.pred_masks)
    masks = processor.post_process_masks(
        outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
    )
    assert len(masks) == 1 and masks[0].shape == (1, 3, 90, 120) and masks[0].dtype == torch.bool


def test_the_sam2_processor_post_processes_the_wrappers_output(models):
    model = models["sam2"]
    wrapper = SamAdapterModel(model)
    wrapper.load_adapter(_adapter(base=wrapper))
    with torch.no_grad():
        outputs = wrapper(**_inputs(model, "points"), multimask_output=False)
    assert outputs.object_score_logits.shape == (1, 2, 1)
    processor = transformers.Sam2Processor(
        transformers.Sam2ImageProcessor(size={"height": IMAGE, "width": IMAGE})
    )
    masks = processor.post_process_masks(outputs.pred_masks, [[90, 120]])
    assert len(masks) == 1 and masks[0].shape == (2, 1, 90, 120)


# ---------------------------------------------------------------------------------------------- key map
def test_the_key_map_round_trips_and_the_converted_models_agree():
    torch.manual_seed(0)
    hf = transformers.SamModel(_small_sam_config()).eval()
    sam = segment_anything_from_hf(hf)
    sam_state = sam.state_dict()
    hf_state = hf.state_dict()
    assert sam_to_hf_state(sam_state).keys() == hf_state.keys()
    assert all(torch.equal(sam_to_hf_state(sam_state)[key], value) for key, value in hf_state.items())
    round_trip = hf_to_sam_state(sam_to_hf_state(sam_state))
    assert round_trip.keys() == sam_state.keys()
    assert all(torch.equal(round_trip[key], value) for key, value in sam_state.items())
    pixels = torch.randn(1, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            sam.image_encoder(pixels), hf.get_image_embeddings(pixels), atol=1e-4, rtol=1e-4
        )
    assert SamAdapterModel(hf).fingerprint() == sam_fingerprint(sam)


def test_an_unknown_key_is_named():
    with pytest.raises(KeyError, match="image_encoder.extra"):
        sam_to_hf_state({"image_encoder.extra": torch.zeros(1)})
    with pytest.raises(KeyError, match="vision_encoder.extra"):
        hf_to_sam_state({"vision_encoder.extra": torch.zeros(1)})


def test_vit_b_fingerprints_match_across_the_two_libraries(vit_b_pair):
    sam, hf = vit_b_pair
    assert SamAdapterModel(hf).fingerprint() == sam_fingerprint(sam)


@pytest.mark.parametrize("multimask", [True, False])
def test_one_adapter_gives_the_same_masks_on_both_libraries(vit_b_pair, multimask):
    sam, hf = vit_b_pair
    adapter = _adapter("banner", seed=4, width=256)
    adapter.bind_base_model(sam, model_type="vit_b")
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(5))
    points = torch.tensor([[[400.0, 300.0], [620.0, 500.0]]])
    labels = torch.tensor([[1, 0]])
    wrapper = SamAdapterModel(hf, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fingerprints match: no warning
        wrapper.load_adapter(adapter)
    with torch.no_grad():
        meta = decode_prompts(
            sam,
            embedding,
            point_coords=points,
            point_labels=labels,
            multimask_output=multimask,
            plm=adapter.plm,
        )
        plain = decode_prompts(
            sam, embedding, point_coords=points, point_labels=labels, multimask_output=multimask
        )
        ours = wrapper(
            image_embeddings=embedding,
            input_points=points[None],
            input_labels=labels[None],
            multimask_output=multimask,
        )
    logits, scores = ours.pred_masks[0], ours.iou_scores[0]
    assert (meta.low_res_logits - plain.low_res_logits).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(logits, meta.low_res_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(scores, meta.iou_predictions, atol=1e-4, rtol=1e-4)
    # the thresholded masks differ only where a logit is within the tolerance of 0: a handful of pixels
    flipped = (logits > 0) != (meta.low_res_logits > 0)
    assert flipped.sum() <= 1e-4 * flipped.numel()
    assert (meta.low_res_logits[flipped].abs() <= 1e-4).all()
