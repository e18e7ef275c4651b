"""CustomSam2VideoPredictor on a short synthetic video (random ``sam2.1_hiera_tiny`` weights): the clicks on a
frame are answered by the adapter (the same mask as the image predictor's), and propagation carries it
through the other frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")

from PIL import Image

from samplm import AdapterConfig, CustomSam2Predictor, PromptAdapter
from samplm.decoder.sam2_video import build_sam2_video_adapter_predictor

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:FutureWarning",
    "ignore:cannot import name '_C':UserWarning",  # sam2's optional CUDA extension (hole filling)
)
SIZE = 1024  # SAM 2's input: frames of this size are not resized by either loader
CLICK = (np.array([[420.0, 380.0]]), np.array([1], dtype=np.int32))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """Three JPEG frames of a block moving right on a textured background."""
    folder = tmp_path_factory.mktemp("video")
    rng = np.random.default_rng(0)
    background = rng.integers(0, 120, size=(SIZE, SIZE, 3), dtype=np.uint8)
    for index in range(3):
        frame = background.copy()
        frame[300:500, 300 + 40 * index : 560 + 40 * index] = (230, 200, 40)
        Image.fromarray(frame).save(folder / f"{index:05d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    model = build_sam2_video_adapter_predictor("sam2.1_hiera_tiny")
    with torch.no_grad():  # random weights: make the object-score head say "present", so masks are not gated
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(20.0)
    adapter = PromptAdapter(AdapterConfig(task="block"))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in adapter.plm.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    adapter.bind_base_model(model, model_type="sam2.1_hiera_tiny")
    model.load_adapter(adapter)
    return model


def clicked_frame_logits(predictor, video) -> torch.Tensor:
    state = predictor.init_state(str(video))
    _, _, logits = predictor.add_new_points_or_box(
        state, frame_idx=0, obj_id=1, points=CLICK[0], labels=CLICK[1]
    )
    return state, logits[0, 0]


def test_clicked_frame_is_answered_by_the_adapter_and_propagated(predictor, video):
    state, adapted = clicked_frame_logits(predictor, video)
    frames = {index: masks[0, 0] for index, _, masks in predictor.propagate_in_video(state)}
    assert sorted(frames) == [0, 1, 2]
    assert torch.equal(frames[0], adapted)
    assert all((frames[i] > 0).any() for i in frames)  # a mask carried through every frame

    image = CustomSam2Predictor(predictor)
    image.load_adapter(predictor.get_adapter("block"))
    image.set_image(np.array(Image.open(video / "00000.jpg")))
    masks, scores, _ = image.predict(point_coords=CLICK[0], point_labels=CLICK[1], return_logits=True)
    best = torch.as_tensor(masks[int(np.argmax(scores))])
    # the two loaders normalise the JPEG in float64 and float32: equal to float precision
    torch.testing.assert_close(adapted, best, atol=2e-3, rtol=0)
    assert ((adapted > 0) != (best > 0)).float().mean() < 1e-4

    with predictor.disable_adapter():
        _, plain = clicked_frame_logits(predictor, video)
    assert not torch.allclose(plain, adapted, atol=1e-2)  # the adapter changed the answer
