"""decode_prompts: the decoder's image features come out of the forward path itself (no hooks), leave
the masks bit-identical, and keep predictors on one shared SAM independent across threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import make_adapter

from samplm import CustomSamPredictor, PMMConfig, decode_prompts


def _prompts(sam):
    torch.manual_seed(0)
    side = sam.image_encoder.img_size
    return {
        "points": {
            "point_coords": torch.rand(4, 2, 2) * side,
            "point_labels": torch.ones(4, 2, dtype=torch.int64),
        },
        "box": {"boxes": torch.tensor([[10.0, 12.0, 90.0, 70.0]] * 2)},
    }


@pytest.mark.parametrize("prompt", ["points", "box"])
@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("with_plm", [False, True])
def test_image_features_leave_the_masks_bit_identical(tiny_sam, prompt, multimask, with_plm):
    grid = tiny_sam.prompt_encoder.image_embedding_size
    embedding = torch.randn(1, 256, *grid, generator=torch.Generator().manual_seed(1))
    plm = make_adapter().plm.eval() if with_plm else None
    kwargs = dict(_prompts(tiny_sam)[prompt], multimask_output=multimask, plm=plm)
    plain = decode_prompts(tiny_sam, embedding, **kwargs)
    with_features = decode_prompts(tiny_sam, embedding, **kwargs, return_image_features=True)
    assert plain.image_features is None
    assert torch.equal(plain.low_res_logits, with_features.low_res_logits)
    assert torch.equal(plain.iou_predictions, with_features.iou_predictions)
    batch = len(plain.low_res_logits)
    assert with_features.image_features.shape == (batch, 256, *grid)


def test_image_features_are_the_two_way_transformers_image_output(tiny_sam):
    embedding = torch.randn(1, 256, *tiny_sam.prompt_encoder.image_embedding_size)
    seen = []
    handle = tiny_sam.mask_decoder.transformer.register_forward_hook(lambda m, i, out: seen.append(out[1]))
    try:
        out = decode_prompts(tiny_sam, embedding, **_prompts(tiny_sam)["points"], return_image_features=True)
    finally:
        handle.remove()
    b, c, h, w = out.image_features.shape
    assert torch.equal(out.image_features, seen[0].transpose(1, 2).reshape(b, c, h, w))


def test_predict_refined_on_a_shared_sam_is_thread_safe(tiny_sam, image):
    """Two predictors on one SAM, each refining its own image with its own adapter, in two threads:
    every result equals the one computed alone."""
    images = [image, np.ascontiguousarray(image[::-1, ::-1])]
    predictors = []
    for k, img in enumerate(images):
        predictor = CustomSamPredictor(tiny_sam)
        predictor.load_adapter(make_adapter(f"task{k}", seed=k, pmm=PMMConfig(num_points=12)))
        predictor.set_image(img)
        predictors.append(predictor)
    clicks = [
        {"point_coords": np.array([[20.0 + 3 * i, 30.0 + 2 * i]]), "point_labels": np.array([1])}
        for i in range(25)
    ]
    expected = [[p.predict_refined(**c)[0] for c in clicks] for p in predictors]
    mismatches = [0, 0]

    def work(k: int) -> None:
        for _ in range(6):
            for i, click in enumerate(clicks):
                if not np.array_equal(predictors[k].predict_refined(**click)[0], expected[k][i]):
                    mismatches[k] += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == [0, 0]
    assert not tiny_sam.mask_decoder.transformer._forward_hooks


@pytest.mark.parametrize("multimask", [True, False])
def test_score_offsets_shift_the_scores_and_leave_the_masks(tiny_sam, multimask):
    plm = make_adapter("task").plm
    embedding = torch.randn(1, 256, *tiny_sam.prompt_encoder.image_embedding_size)
    click = _prompts(tiny_sam)["points"]
    with torch.no_grad():
        plm.score_offset.copy_(torch.tensor([0.3, -0.2, 0.1, 0.4]))
        shifted = decode_prompts(tiny_sam, embedding, **click, multimask_output=multimask, plm=plm)
        plm.score_offset.zero_()
        plain = decode_prompts(tiny_sam, embedding, **click, multimask_output=multimask, plm=plm)
    expected = torch.tensor([-0.2, 0.1, 0.4] if multimask else [0.3])
    assert torch.equal(shifted.low_res_logits, plain.low_res_logits)
    assert torch.allclose(
        shifted.iou_predictions - plain.iou_predictions, expected.expand_as(plain.iou_predictions)
    )
