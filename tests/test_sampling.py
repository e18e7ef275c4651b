"""Training targets and prompt sampling."""

from __future__ import annotations

import numpy as np
import pytest

from samplm.prompts.sampling import PromptSampler
from samplm.train.targets import make_target, to_low_res


def _target(num_points=None):
    mask = np.zeros((100, 200), bool)
    mask[20:60, 40:120] = True  # 40 x 80 box in a 100 x 200 image
    # SAM frame: longest side 200 -> 128, so input 64 x 128, padded 128 x 128, low-res 32 x 32 (scale 4)
    return make_target(mask, (64, 128), 128, 32, num_points)


def test_low_res_target_geometry():
    target = _target(num_points=8)
    ys, xs = np.nonzero(target.low_res)
    # x 40..120 -> input 25.6..76.8 -> low-res 6.4..19.2: cells 6..18 kept (cell 19 is only 0.2 covered)
    # y 20..60 -> input 12.8..38.4 -> low-res 3.2..9.6: cells 3..9
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (6, 18, 3, 9)
    assert target.box == (24.0, 12.0, 76.0, 40.0)
    assert target.contour.shape == (8, 2)
    assert target.contour[:, 0].min() >= 24 and target.contour[:, 0].max() <= 76
    assert not target.low_res[40 // 4 :, :].any()  # padding rows stay empty


def test_tiny_mask_vanishes():
    mask = np.zeros((100, 200), bool)
    mask[50, 50] = True
    assert make_target(mask, (64, 128), 128, 32, None) is None
    assert to_low_res(mask, (64, 128), 128, 32).sum() == 0


def test_clicks_fall_inside_and_favour_centre():
    target = _target()
    rng = np.random.default_rng(0)
    central = PromptSampler(center_power=4.0)
    uniform = PromptSampler(center_power=0.0)
    c = np.concatenate([central.sample(target, rng, 128).points for _ in range(400)])
    u = np.concatenate([uniform.sample(target, rng, 128).points for _ in range(400)])
    for points in (c, u):
        cells = (points // 4).astype(int)
        assert target.low_res[cells[:, 1], cells[:, 0]].all()
    centre = np.array([52.0, 26.0])
    assert np.abs(c - centre).mean() < np.abs(u - centre).mean() - 2


def test_boxes_and_extra_points():
    target = _target()
    rng = np.random.default_rng(1)
    sampler = PromptSampler(box_probability=1.0, box_only_probability=1.0, box_jitter=0.0)
    prompt = sampler.sample(target, rng, 128)
    assert prompt.points is None and np.allclose(prompt.box, target.box)
    jittered = PromptSampler(box_probability=1.0, box_only_probability=1.0, box_jitter=0.1)
    boxes = np.array([jittered.sample(target, rng, 128).box for _ in range(200)])
    assert 1.0 < boxes[:, 0].std() < 10.0 and (boxes[:, 2] >= boxes[:, 0]).all()
    assert sampler.prompt_types == ["box"] and PromptSampler().prompt_types == ["point"]
    extra = PromptSampler(extra_points=3)
    labels = np.concatenate([extra.sample(target, rng, 128).labels for _ in range(200)])
    assert set(labels.tolist()) == {0, 1}
    prompts = [extra.sample(target, rng, 128) for _ in range(100)]
    for prompt in prompts:
        cells = (prompt.points // 4).astype(int)
        inside = target.low_res[cells[:, 1], cells[:, 0]]
        assert np.array_equal(inside, prompt.labels == 1)


@pytest.mark.parametrize("power", [0.0, 1.0])
def test_sampling_is_reproducible(power):
    target = _target()
    sampler = PromptSampler(center_power=power, extra_points=2, box_probability=0.5)
    a = [sampler.sample(target, np.random.default_rng(5), 128) for _ in range(3)]
    b = [sampler.sample(target, np.random.default_rng(5), 128) for _ in range(3)]
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.points, y.points) if x.points is not None else y.points is None
