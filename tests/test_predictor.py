"""CustomSamPredictor: bit-identity with SamPredictor, hot swap, caching, isolation, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from samplm import (
    CustomSamPredictor,
    ImageNotSetError,
    PromptAdapter,
    PromptError,
    UnknownAdapterError,
    decode_prompts,
)

PROMPTS = {
    "point": {"point_coords": np.array([[40.0, 30.0]]), "point_labels": np.array([1])},
    "points": {"point_coords": np.array([[40.0, 30.0], [100.0, 70.0]]), "point_labels": np.array([1, 0])},
    "box": {"box": np.array([25.0, 15.0, 95.0, 65.0])},
    "point+box": {
        "point_coords": np.array([[50.0, 40.0]]),
        "point_labels": np.array([1]),
        "box": np.array([25.0, 15.0, 95.0, 65.0]),
    },
}


@pytest.fixture()
def pair(tiny_sam, image):
    plain, custom = SamPredictor(tiny_sam), CustomSamPredictor(tiny_sam)
    plain.set_image(image)
    custom.set_image(image)
    return plain, custom


def _assert_identical(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y) if isinstance(x, np.ndarray) else torch.equal(x, y)


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("logits", [True, False])
def test_no_adapter_is_bit_identical(pair, prompt, multimask, logits):
    plain, custom = pair
    kwargs = dict(PROMPTS[prompt], multimask_output=multimask, return_logits=logits)
    _assert_identical(plain.predict(**kwargs), custom.predict(**kwargs))


def test_no_adapter_bit_identical_with_mask_input(pair):
    plain, custom = pair
    _, _, low_res = plain.predict(**PROMPTS["point"], multimask_output=False)
    kwargs = dict(PROMPTS["point"], mask_input=low_res, multimask_output=False)
    _assert_identical(plain.predict(**kwargs), custom.predict(**kwargs))


def _batched(predictor):
    coords = torch.tensor([[[40.0, 30.0]], [[100.0, 70.0]], [[60.0, 50.0]]])
    coords = predictor.transform.apply_coords_torch(coords, predictor.original_size)
    labels = torch.ones(3, 1, dtype=torch.int)
    boxes = predictor.transform.apply_boxes_torch(
        torch.tensor([[25.0, 15.0, 95.0, 65.0]] * 3), predictor.original_size
    )
    return coords, labels, boxes


@pytest.mark.parametrize("multimask", [True, False])
def test_no_adapter_bit_identical_predict_torch(pair, multimask):
    plain, custom = pair
    coords, labels, boxes = _batched(plain)
    for args in ((coords, labels, None), (None, None, boxes), (coords, labels, boxes)):
        _assert_identical(
            plain.predict_torch(*args, multimask_output=multimask),
            custom.predict_torch(*args, multimask_output=multimask),
        )


def test_disabled_adapter_is_bit_identical(pair, adapter_factory):
    plain, custom = pair
    custom.load_adapter(adapter_factory("nose"))
    assert custom.active_adapter == "nose"
    with custom.disable_adapter():
        assert custom.active_adapter is None
        _assert_identical(plain.predict(**PROMPTS["point"]), custom.predict(**PROMPTS["point"]))
    assert custom.active_adapter == "nose"
    assert not np.array_equal(plain.predict(**PROMPTS["point"])[2], custom.predict(**PROMPTS["point"])[2])


def test_fresh_adapter_gives_plain_sam_output(pair):
    plain, custom = pair
    custom.load_adapter(PromptAdapter(), "fresh")
    _assert_identical(plain.predict(**PROMPTS["points"]), custom.predict(**PROMPTS["points"]))


def test_adapter_output_matches_uncached_reference(pair, adapter_factory, tiny_sam):
    _, custom = pair
    adapter = adapter_factory("nose")
    custom.load_adapter(adapter)
    coords, labels, _ = _batched(custom)
    _masks, iou, low_res = custom.predict_torch(coords, labels, multimask_output=True)
    with torch.no_grad():
        reference = decode_prompts(
            tiny_sam, custom.features, point_coords=coords, point_labels=labels, plm=adapter.plm
        )
    torch.testing.assert_close(low_res, reference.low_res_logits, rtol=0, atol=0)
    torch.testing.assert_close(iou, reference.iou_predictions, rtol=0, atol=0)


def test_hot_swap_never_reencodes(pair, adapter_factory, tiny_sam, image):
    _, custom = pair
    custom.reset_image()
    calls = []
    handle = tiny_sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        custom.set_image(image)
        features = custom.features
        custom.load_adapter(adapter_factory("nose", seed=1))
        custom.load_adapter(adapter_factory("banner", seed=2))
        assert custom.adapters == ["nose", "banner"] and custom.active_adapter == "nose"
        nose_1 = custom.predict(**PROMPTS["point"])
        custom.set_adapter("banner")
        banner = custom.predict(**PROMPTS["point"])
        custom.set_adapter("nose")
        nose_2 = custom.predict(**PROMPTS["point"])
        with custom.disable_adapter():
            plain = custom.predict(**PROMPTS["point"])
    finally:
        handle.remove()
    assert len(calls) == 1 and custom.features is features
    _assert_identical(nose_1, nose_2)
    assert not np.array_equal(nose_1[2], banner[2])
    assert not np.array_equal(nose_1[2], plain[2])


def test_same_image_is_encoded_once(tiny_sam, image):
    predictor = CustomSamPredictor(tiny_sam)
    calls = []
    handle = tiny_sam.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        predictor.set_image(image)
        predictor.set_image(image.copy())  # same pixels: kept
        assert len(calls) == 1
        predictor.set_image(image, image_format="BGR")  # same bytes, other channel order: encoded
        assert len(calls) == 2
        other = image.copy()
        other[0, 0, 0] ^= 1
        predictor.set_image(other)
        assert len(calls) == 3
        predictor.features.mul_(2)  # an embedding changed in place is not trusted
        predictor.set_image(other)
        assert len(calls) == 4
        predictor.reset_image()
        predictor.set_image(other)
        assert len(calls) == 5
    finally:
        handle.remove()


def test_new_image_refreshes_adapter_cache(tiny_sam, image, adapter_factory):
    custom = CustomSamPredictor(tiny_sam)
    custom.load_adapter(adapter_factory("nose"))
    custom.set_image(image)
    custom.predict(**PROMPTS["point"])
    other = np.ascontiguousarray(image[::-1])
    custom.set_image(other)
    fresh = CustomSamPredictor(tiny_sam)
    fresh.load_adapter(adapter_factory("nose"))
    fresh.set_image(other)
    _assert_identical(custom.predict(**PROMPTS["point"]), fresh.predict(**PROMPTS["point"]))


def test_modified_adapter_weights_refresh_cache(pair, adapter_factory):
    _, custom = pair
    adapter = adapter_factory("nose")
    custom.load_adapter(adapter)
    before = custom.predict(**PROMPTS["point"])
    with torch.no_grad():
        custom.get_adapter("nose").plm.cross_attn.k_proj.weight.mul_(3.0)
    after = custom.predict(**PROMPTS["point"])
    assert not np.array_equal(before[2], after[2])


def test_other_predictors_on_same_sam_are_unaffected(tiny_sam, image, adapter_factory):
    plain = SamPredictor(tiny_sam)
    plain.set_image(image)
    before = plain.predict(**PROMPTS["point"])
    custom = CustomSamPredictor(tiny_sam)
    custom.load_adapter(adapter_factory("nose"))
    custom.set_image(image)
    custom.predict(**PROMPTS["point"])
    _assert_identical(before, plain.predict(**PROMPTS["point"]))
    decoder = tiny_sam.mask_decoder
    assert not decoder._forward_pre_hooks and not decoder._forward_hooks
    assert type(decoder).forward is type(decoder).__dict__["forward"]


def test_load_by_path_name_default_and_activation(tmp_path, tiny_sam, adapter_factory):
    adapter_factory("nose", seed=1).save_pretrained(tmp_path / "nose")
    adapter_factory("banner", seed=2).save_pretrained(tmp_path / "banner")
    custom = CustomSamPredictor(tiny_sam)
    assert custom.load_adapter(tmp_path / "nose") == "nose"
    assert custom.load_adapter(str(tmp_path / "banner"), adapter_name="flag") == "flag"
    assert custom.active_adapter == "nose"
    custom.load_adapter(tmp_path / "banner", adapter_name="b2", activate=True)
    assert custom.active_adapter == "b2"
    with pytest.raises(ValueError, match="already loaded"):
        custom.load_adapter(tmp_path / "nose")
    custom.load_adapter(tmp_path / "nose", replace=True)
    custom.delete_adapter("b2")
    assert custom.active_adapter is None and custom.adapters == ["nose", "flag"]


def test_adapter_follows_model_device_and_dtype(tiny_sam, adapter_factory):
    sam64 = copy.deepcopy(tiny_sam).double()
    custom = CustomSamPredictor(sam64)
    custom.load_adapter(adapter_factory("nose"))
    params = list(custom.get_adapter("nose").parameters())
    assert all(p.dtype == torch.float64 and not p.requires_grad for p in params)


def test_strict_fingerprint(tiny_sam, other_sam, adapter_factory):
    from samplm import AdapterCompatibilityError, FingerprintMismatchWarning

    adapter = adapter_factory("nose")
    adapter.bind_base_model(other_sam)
    with pytest.warns(FingerprintMismatchWarning):
        CustomSamPredictor(tiny_sam).load_adapter(adapter)
    with pytest.raises(AdapterCompatibilityError):
        CustomSamPredictor(tiny_sam, strict=True).load_adapter(adapter)
    with pytest.raises(AdapterCompatibilityError):
        CustomSamPredictor(tiny_sam).load_adapter(adapter, strict=True)


# ---------------------------------------------------------------- errors


def test_predict_without_image(tiny_sam):
    custom = CustomSamPredictor(tiny_sam)
    with pytest.raises(ImageNotSetError, match="set_image"):
        custom.predict(**PROMPTS["point"])
    with pytest.raises(RuntimeError):
        custom.predict_torch(None, None, boxes=torch.zeros(1, 4))


def test_unknown_adapter(pair):
    _, custom = pair
    with pytest.raises(UnknownAdapterError, match="'nose'.*loaded: none"):
        custom.set_adapter("nose")
    with pytest.raises(KeyError):
        custom.delete_adapter("nose")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"point_labels": np.array([1])}, "without point_coords"),
        ({"point_coords": np.array([[1.0, 2.0]])}, "without point_labels"),
        ({"point_coords": np.array([1.0, 2.0]), "point_labels": np.array([1])}, "N x 2"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([1, 1])}, "must have shape"),
        ({"point_coords": np.array([[1.0, 2.0]]), "point_labels": np.array([7])}, "labels must be"),
        ({"point_coords": np.array([[130.0, 20.0]]), "point_labels": np.array([1])}, "outside the image"),
        ({"point_coords": np.array([[10.0, -1.0]]), "point_labels": np.array([1])}, "outside the image"),
        ({"point_coords": np.array([[np.nan, 1.0]]), "point_labels": np.array([1])}, "NaN"),
        ({"box": np.array([10.0, 10.0, 5.0, 20.0])}, "x1 <= x2"),
        ({"box": np.array([10.0, 10.0, 20.0])}, "shape"),
        ({"box": np.array([0.0, 0.0, 200.0, 20.0])}, "outside the image"),
        ({"box": np.array([0.0, 0.0, 20.0, 20.0]), "mask_input": np.zeros((1, 256, 256))}, "mask_input"),
    ],
)
def test_bad_prompts(pair, kwargs, match):
    _, custom = pair
    with pytest.raises(PromptError, match=match):
        custom.predict(**kwargs)


def test_bad_batched_prompts(pair):
    _, custom = pair
    coords, labels, boxes = _batched(custom)
    with pytest.raises(PromptError, match="disagree"):
        custom.predict_torch(coords, labels, boxes[:2])
    with pytest.raises(PromptError, match="B x N x 2"):
        custom.predict_torch(coords[0], labels[0])
    with pytest.raises(PromptError, match="outside the resized input frame"):
        custom.predict_torch(coords + 500, labels)


def test_set_embedding_predicts_as_set_image(pair, adapter_factory):
    _, custom = pair
    custom.load_adapter(adapter_factory("a"))
    expected = custom.predict(**PROMPTS["point"])
    embedding = custom.get_image_embedding().clone()
    original, input_size = tuple(custom.original_size), tuple(custom.input_size)
    custom.reset_image()
    custom.set_embedding(embedding, original, input_size)
    assert custom.is_image_set and tuple(custom.input_size) == input_size
    _assert_identical(custom.predict(**PROMPTS["point"]), expected)
    custom.set_embedding(embedding[0].half(), original)  # as a cache stores it: 256 x h x w float16
    assert custom.features.dtype == torch.float32 and tuple(custom.input_size) == input_size
    np.testing.assert_allclose(custom.predict(**PROMPTS["point"])[1], expected[1], atol=2e-2)


def test_set_embedding_rejects_inconsistent_input(pair):
    _, custom = pair
    embedding = custom.get_image_embedding()
    with pytest.raises(ValueError, match="embedding must be 1 x 256"):
        custom.set_embedding(embedding[:, :, :4], (90, 120))
    with pytest.raises(ValueError, match="does not match original_size"):
        custom.set_embedding(embedding, (90, 120), (50, 50))


def test_upscale_logits_thresholds_at_the_models_mask_threshold(tiny_sam, image):
    sam = copy.deepcopy(tiny_sam)
    sam.mask_threshold = 1.5
    predictor = CustomSamPredictor(sam)
    predictor.set_image(image)
    masks, _, low_res = predictor.predict(**PROMPTS["point"])
    logits = predictor.upscale_logits(torch.as_tensor(low_res)[None], return_logits=True)[0].numpy()
    assert np.array_equal(masks, logits > 1.5) and not np.array_equal(masks, logits > 0)


# ---------------------------------------------------------------- input forms (issue 13)


def _features(predictor, image, image_format="RGB"):
    predictor.set_image(image, image_format)
    return predictor.features.clone()


def test_set_image_converts_grayscale_rgba_and_unit_floats(tiny_sam, image):
    custom = CustomSamPredictor(tiny_sam)
    rgb = _features(custom, image)
    gray = image[..., 0]
    expected_gray = _features(custom, np.ascontiguousarray(np.stack([gray] * 3, axis=-1)))
    assert torch.equal(_features(custom, gray), expected_gray)
    assert torch.equal(_features(custom, gray[..., None]), expected_gray)
    rgba = np.concatenate([image, np.full((*image.shape[:2], 1), 7, np.uint8)], axis=-1)
    assert torch.equal(_features(custom, rgba), rgb)
    for dtype in (np.float64, np.float32):
        assert torch.equal(_features(custom, image.astype(dtype) / 255), rgb)
    assert torch.equal(_features(custom, np.ascontiguousarray(image[..., ::-1]), "BGR"), rgb)
    assert tuple(custom.original_size) == image.shape[:2]


@pytest.mark.parametrize(
    ("convert", "match"),
    [
        (lambda im: im.astype(np.float32), r"uint8.*0\.\.1|0\.\.1.*uint8"),
        (lambda im: im.astype(np.uint16) * 257, "uint16"),
        (lambda im: im.astype(np.int64), "int64"),
        (lambda im: np.ascontiguousarray(im.transpose(2, 0, 1)), "H x W x 3"),
        (lambda im: im[..., :2], "H x W x 3"),
        (lambda im: im[None], "H x W x 3"),
        (lambda im: np.where(im > 0, np.nan, 0.0), "NaN"),
        (lambda im: im[:0], "empty"),
    ],
)
def test_set_image_rejects_other_forms_with_one_clear_error(tiny_sam, image, convert, match):
    from samplm.errors import SamplmError

    custom = CustomSamPredictor(tiny_sam)
    with pytest.raises(SamplmError, match=match) as info:
        custom.set_image(convert(image))
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert not custom.is_image_set
    with pytest.raises(ValueError, match="image_format"):
        custom.set_image(image, "rgb ")


def test_predict_accepts_plain_lists(pair):
    _, custom = pair
    lists = {"point_coords": [[40, 30], [100, 70]], "point_labels": [1, 0], "box": [25, 15, 95, 65]}
    arrays = {key: np.array(value) for key, value in lists.items()}
    _assert_identical(custom.predict(**lists), custom.predict(**arrays))
    _, _, low_res = custom.predict(**arrays, multimask_output=False)
    with_mask = custom.predict(**lists, mask_input=low_res.tolist(), multimask_output=False)
    _assert_identical(with_mask, custom.predict(**arrays, mask_input=low_res, multimask_output=False))


def test_predict_torch_rejects_numpy_with_a_hint(pair):
    _, custom = pair
    coords, labels, boxes = _batched(custom)
    with pytest.raises(PromptError, match=r"torch tensors.*predict\("):
        custom.predict_torch(coords.numpy(), labels.numpy())
    with pytest.raises(PromptError, match="boxes"):
        custom.predict_torch(None, None, boxes=boxes.numpy())
    with pytest.raises(PromptError, match="torch tensors"):
        custom.decode(coords.numpy(), labels)


def test_non_finite_prompts_are_rejected(pair):
    _, custom = pair
    coords, labels, _ = _batched(custom)
    bad_mask = torch.zeros(3, 1, 32, 32)
    bad_mask[1, 0, 3, 4] = float("nan")
    with pytest.raises(PromptError, match="mask_input.*NaN"):
        custom.predict_torch(coords, labels, mask_input=bad_mask)
    with pytest.raises(PromptError, match="mask_input.*NaN"):
        custom.predict_torch(coords, labels, mask_input=torch.full((3, 1, 32, 32), float("inf")))
    inf_coords = coords.clone()
    inf_coords[0, 0, 0] = float("inf")
    with pytest.raises(PromptError, match="NaN or infinite"):
        custom.predict_torch(inf_coords, labels)
    with pytest.raises(PromptError, match="mask_input.*NaN"):
        custom.predict(**PROMPTS["point"], mask_input=np.full((1, 32, 32), np.inf))


def test_load_adapter_registers_a_copy_and_leaves_the_callers_module_alone(tiny_sam, adapter_factory):
    adapter = adapter_factory("nose").train()
    custom = CustomSamPredictor(copy.deepcopy(tiny_sam).double())
    custom.load_adapter(adapter)
    assert adapter.training and all(
        p.requires_grad and p.dtype == torch.float32 for p in adapter.parameters()
    )
    loaded = custom.get_adapter("nose")
    assert loaded is not adapter and not loaded.training
    assert all(p.dtype == torch.float64 and not p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        adapter.plm.norm_out.weight.mul_(2.0)  # the caller's later edits do not reach the predictor
    assert not torch.equal(adapter.plm.norm_out.weight.double(), loaded.plm.norm_out.weight)


def test_adapters_follow_the_sam_cast_after_load(tiny_sam, image, adapter_factory):
    expected = CustomSamPredictor(tiny_sam)
    expected.load_adapter(adapter_factory("nose"))
    expected.set_image(image)
    sam = copy.deepcopy(tiny_sam).double()  # SAM's own code runs in float32 only: cast back after loading
    custom = CustomSamPredictor(sam)
    custom.load_adapter(adapter_factory("nose"))
    assert all(p.dtype == torch.float64 for p in custom.get_adapter("nose").parameters())
    sam.float()
    custom.set_image(image)
    _assert_identical(custom.predict(**PROMPTS["point"]), expected.predict(**PROMPTS["point"]))
    assert all(p.dtype == torch.float32 for p in custom.get_adapter("nose").parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_adapters_follow_the_sam_moved_to_the_gpu_after_load(tiny_sam, image, adapter_factory):
    sam = copy.deepcopy(tiny_sam)
    custom = CustomSamPredictor(sam)
    custom.load_adapter(adapter_factory("nose"))
    custom.set_image(image)
    expected = custom.predict(**PROMPTS["point"])
    sam.cuda()
    custom.set_image(image)
    _masks, scores, low_res = custom.predict(**PROMPTS["point"])
    assert all(p.is_cuda for p in custom.get_adapter("nose").parameters())
    np.testing.assert_allclose(scores, expected[1], atol=1e-3)
    np.testing.assert_allclose(low_res, expected[2], atol=1e-2)


def test_adapter_that_predicts_nan_is_named(tmp_path, pair, adapter_factory):
    from samplm.errors import AdapterOutputError, SamplmError

    plain, custom = pair
    adapter = adapter_factory("huge")
    with torch.no_grad():
        adapter.plm.norm_out.weight.fill_(3e38)  # finite, but overflows to inf in the offset
    adapter.save_pretrained(tmp_path / "huge")
    custom.load_adapter(tmp_path / "huge")  # loads: every weight is finite
    with pytest.raises(AdapterOutputError, match="adapter 'huge'.*NaN") as info:
        custom.predict(**PROMPTS["point"])
    assert isinstance(info.value, SamplmError)
    with custom.disable_adapter():
        _assert_identical(plain.predict(**PROMPTS["point"]), custom.predict(**PROMPTS["point"]))


def test_in_memory_adapter_with_non_finite_weights_is_refused(pair, adapter_factory):
    _, custom = pair
    adapter = adapter_factory("broken")
    with torch.no_grad():
        adapter.plm.mlp.lin1.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="broken.*plm.mlp.lin1.weight.*NaN or infinite"):
        custom.load_adapter(adapter)
    assert custom.adapters == []


def test_set_image_under_inference_mode_and_after_the_encoder_changes(tiny_sam, image):
    predictor = CustomSamPredictor(copy.deepcopy(tiny_sam))
    calls = []
    predictor.model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    with torch.inference_mode():  # inference tensors have no version counter: always encode
        predictor.set_image(image)
        predictor.set_image(image)
        masks, _, _ = predictor.predict(**PROMPTS["point"])
    assert len(calls) == 2 and masks.shape[1:] == image.shape[:2]
    predictor.set_image(image)
    predictor.set_image(image)
    assert len(calls) == 3
    predictor.model.double()  # cast: the kept embedding is stale
    predictor.set_image(image)
    assert len(calls) == 4 and predictor.features.dtype == torch.float64
    with torch.no_grad():
        next(predictor.model.image_encoder.parameters()).add_(0.1)  # weights changed in place
    predictor.set_image(image)
    assert len(calls) == 5


def test_use_adapter_forgets_an_adapter_deleted_inside(tiny_sam, adapter_factory, image):
    predictor = CustomSamPredictor(tiny_sam)
    predictor.load_adapter(adapter_factory("nose", seed=1))
    predictor.load_adapter(adapter_factory("banner", seed=2))
    with predictor.use_adapter("banner"):
        assert predictor.active_adapter == "banner"
        predictor.delete_adapter("nose")
    assert predictor.active_adapter is None
    predictor.set_image(image)
    predictor.predict(**PROMPTS["point"])  # plain SAM, no error
