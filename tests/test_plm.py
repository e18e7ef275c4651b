"""The Prompt Learning Module and Point Matching Module: sizes, identity at init, caching, errors."""

from __future__ import annotations

import pytest
import torch

from samplm.adapter import PointMatchingModule, PromptLearningModule


def test_plm_parameter_count_matches_paper():
    plm = PromptLearningModule()
    count = sum(p.numel() for p in plm.parameters())
    assert count == 1_578_752 + 4 + 9  # the paper's module, a score offset per decoder output, 3 x 3 mix
    assert abs(count - 1_600_000) / 1_600_000 < 0.02  # paper, Table 4: 1.6M


def test_fresh_plm_leaves_scores_unchanged_and_offsets_select_columns():
    plm = PromptLearningModule()
    scores = torch.rand(5, 3)
    assert torch.equal(plm.adjust_scores(scores, multimask_output=True), scores)
    with torch.no_grad():
        plm.score_offset.copy_(torch.tensor([0.5, -0.1, 0.2, -0.3]))
    multimask = plm.adjust_scores(scores, multimask_output=True)
    assert torch.allclose(multimask - scores, torch.tensor([-0.1, 0.2, -0.3]).expand(5, 3))
    single = plm.adjust_scores(scores[:, :1], multimask_output=False)
    assert torch.allclose(single - scores[:, :1], torch.full((5, 1), 0.5))
    all_four = plm.adjust_scores(torch.zeros(2, 4), multimask_output=True)
    assert torch.allclose(all_four, plm.score_offset.detach().expand(2, 4))
    with pytest.raises(ValueError, match="3 .multimask. or 1 columns"):
        plm.adjust_scores(scores[:, :1], multimask_output=True)


@pytest.mark.parametrize("num_tokens", [2, 3, 5])  # 1 click + pad, box corners + 1 point, 4 clicks + pad
def test_fresh_plm_is_exact_identity(num_tokens):
    plm = PromptLearningModule()
    tokens = torch.randn(4, num_tokens, 256)
    image = torch.randn(1, 256, 8, 8)
    pe = torch.randn(1, 256, 8, 8)
    out = plm(tokens, image, pe)
    assert torch.equal(out, tokens)


def _trained_plm(seed=0) -> PromptLearningModule:
    torch.manual_seed(seed)
    plm = PromptLearningModule()
    torch.nn.init.normal_(plm.norm_out.weight)
    torch.nn.init.normal_(plm.norm_out.bias)
    return plm.eval()


def test_cached_context_equals_direct_forward():
    plm = _trained_plm()
    tokens, image, pe = torch.randn(3, 2, 256), torch.randn(1, 256, 8, 8), torch.randn(1, 256, 8, 8)
    direct = plm(tokens, image, pe)
    cached = plm(tokens, context=plm.image_context(image, pe))
    assert not torch.equal(direct, tokens)
    torch.testing.assert_close(direct, cached, rtol=0, atol=0)


def test_per_prompt_images_match_one_at_a_time():
    plm = _trained_plm()
    tokens, images = torch.randn(3, 2, 256), torch.randn(3, 256, 8, 8)
    pe = torch.randn(1, 256, 8, 8)
    batched = plm(tokens, images, pe)
    for i in range(3):
        single = plm(tokens[i : i + 1], images[i : i + 1], pe)
        torch.testing.assert_close(batched[i : i + 1], single, rtol=1e-5, atol=1e-5)


def test_plm_depends_on_image_and_is_permutation_equivariant():
    plm = _trained_plm()
    tokens, pe = torch.randn(1, 3, 256), torch.randn(1, 256, 8, 8)
    a = plm(tokens, torch.randn(1, 256, 8, 8), pe)
    b = plm(tokens, torch.randn(1, 256, 8, 8), pe)
    assert not torch.allclose(a, b)
    perm = torch.tensor([2, 0, 1])
    image = torch.randn(1, 256, 8, 8)
    torch.testing.assert_close(plm(tokens[:, perm], image, pe), plm(tokens, image, pe)[:, perm])


def test_gradients_reach_every_parameter_after_first_step():
    plm = PromptLearningModule()
    tokens, image, pe = torch.randn(2, 2, 256), torch.randn(1, 256, 8, 8), torch.randn(1, 256, 8, 8)
    plm(tokens, image, pe).pow(2).sum().backward()
    with_grad = {n for n, p in plm.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    # Zero-initialised output LayerNorm: only its gain and bias receive gradient at step 0 ...
    assert with_grad == {"norm_out.weight", "norm_out.bias"}
    with torch.no_grad():
        plm.norm_out.weight.fill_(0.1)
    plm.zero_grad()
    logits, scores = plm.adjust_outputs(torch.randn(2, 3, 32, 32), torch.rand(2, 3), True, image)
    loss = plm(tokens, image, pe).pow(2).sum() + scores.pow(2).sum() + logits.pow(2).sum()
    loss.backward()
    # ... and once it is non-zero every parameter does (the score offsets through the scores, the mix
    # through the logits; the single-mask output's offset is trained by single-mask outputs).
    missing = [n for n, p in plm.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    assert torch.equal(plm.score_offset.grad == 0, torch.tensor([True, False, False, False]))


@pytest.mark.parametrize(
    ("tokens", "image", "pe", "match"),
    [
        (torch.randn(2, 256), torch.randn(1, 256, 8, 8), torch.randn(1, 256, 8, 8), "tokens must be"),
        (torch.randn(2, 2, 128), torch.randn(1, 256, 8, 8), torch.randn(1, 256, 8, 8), "tokens must be"),
        (torch.randn(2, 2, 256), torch.randn(1, 128, 8, 8), torch.randn(1, 128, 8, 8), "image_embedding"),
        (torch.randn(2, 2, 256), torch.randn(1, 256, 8, 8), torch.randn(1, 256, 4, 4), "image_pe"),
        (torch.randn(2, 2, 256), torch.randn(3, 256, 8, 8), torch.randn(1, 256, 8, 8), "prompt batch"),
    ],
)
def test_plm_shape_errors(tokens, image, pe, match):
    with pytest.raises(ValueError, match=match):
        PromptLearningModule()(tokens, image, pe)


def test_plm_needs_image_or_context():
    with pytest.raises(ValueError, match="precomputed context"):
        PromptLearningModule()(torch.randn(1, 2, 256))


def test_pmm_size_and_output_range():
    pmm = PointMatchingModule()
    count = sum(p.numel() for p in pmm.parameters())
    assert abs(count - 1_200_000) / 1_200_000 < 0.05  # paper, Table 4: 1.2M
    out = pmm(torch.randn(3, 20, 256) * 100)
    assert out.shape == (3, 20, 2)
    assert out.abs().max() <= pmm.max_offset


def test_pmm_attends_across_points_of_one_contour():
    pmm = PointMatchingModule().eval()
    feats = torch.randn(2, 20, 256)
    base = pmm(feats)
    changed = feats.clone()
    changed[0, 5] += 3.0 * torch.randn(256)  # perturb one point of contour 0
    out = pmm(changed)
    assert not torch.allclose(out[0, 6], base[0, 6])  # other points of the same contour react
    torch.testing.assert_close(out[1], base[1])  # the other contour does not


@pytest.mark.parametrize(
    ("module", "kwargs", "match"),
    [
        (PromptLearningModule, {"num_heads": 0}, r"plm\.num_heads"),
        (PromptLearningModule, {"mlp_dim": 1 << 20}, r"plm\.mlp_dim must be an integer in \[1, 8192\]"),
        (PromptLearningModule, {"attention_downsample_rate": 0}, "attention_downsample_rate"),
        (PointMatchingModule, {"num_heads": 0}, r"pmm\.num_heads"),
        (PointMatchingModule, {"depth": -1}, r"pmm\.depth"),
        (PointMatchingModule, {"num_points": 2}, r"pmm\.num_points"),
    ],
)
def test_module_hyper_parameters_are_checked_before_allocation(module, kwargs, match):
    with pytest.raises(ValueError, match=match):
        module(**kwargs)


def test_mask_mix_is_the_identity_when_fresh_and_samf_blend_when_set():
    from samplm.eval.samf import SamF

    plm = PromptLearningModule()
    logits, scores, image = torch.randn(2, 3, 8, 8), torch.rand(2, 3), torch.randn(1, 256, 2, 2)
    mixed, adjusted = plm.adjust_outputs(logits, scores, True, image)
    assert torch.equal(mixed, logits) and torch.equal(adjusted, scores)
    samf = SamF(0.6, 0.5)  # the third weight is -0.1
    plm.set_blend(samf.weights)
    mixed, _ = plm.adjust_outputs(logits, scores, True, image)
    for output in range(3):  # every output is SAM-F's blend, so the top mask is too
        torch.testing.assert_close(mixed[:, output : output + 1], samf.blend(logits))
    single = torch.randn(2, 1, 8, 8)
    assert torch.equal(plm.adjust_outputs(single, scores[:, :1], False, image)[0], single)
    every = torch.randn(2, 4, 8, 8)  # all four outputs (the ONNX graph): the single-mask one is not mixed
    mixed, _ = plm.adjust_outputs(every, torch.rand(2, 4), True, image)
    assert torch.equal(mixed[:, :1], every[:, :1])
    torch.testing.assert_close(mixed[:, 1:2], samf.blend(every[:, 1:]))
    plm.reset_offset()
    assert torch.equal(plm.mask_mix.detach(), torch.eye(3))


def test_mask_features_are_the_mean_embedding_under_each_mask():
    from samplm.adapter.plm import mask_features

    embedding = torch.arange(2 * 2 * 2, dtype=torch.float32).reshape(1, 2, 2, 2)  # E = 2 on a 2 x 2 grid
    logits = -torch.ones(3, 2, 8, 8)
    logits[0, 0, :4, :4] = 1  # the top-left cell whole
    logits[0, 1, :4, :] = 1  # the top row of cells
    logits[1, 0, :2, :4] = 1  # half of the top-left cell: still that cell alone
    features = mask_features(logits, embedding)
    assert features.shape == (3, 2, 2)
    torch.testing.assert_close(features[0, 0], embedding[0, :, 0, 0])
    torch.testing.assert_close(features[0, 1], embedding[0, :, 0, :].mean(dim=-1))
    torch.testing.assert_close(features[1, 0], embedding[0, :, 0, 0])
    assert torch.equal(features[2], torch.zeros(2, 2))  # empty masks: zeros
    with pytest.raises(ValueError, match="whole multiple"):
        mask_features(torch.zeros(1, 3, 7, 7), embedding)


def test_score_readout_ranks_each_photo_by_what_lies_under_its_masks():
    plm = PromptLearningModule(embed_dim=8, num_heads=2, mlp_dim=16)
    embedding = torch.zeros(2, 8, 2, 2)
    embedding[0, 0], embedding[1, 1] = 1.0, 1.0  # photo 0: channel 0 everywhere; photo 1: channel 1
    logits = torch.ones(2, 3, 8, 8)  # every mask covers the whole photo
    scores = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 0.7]])
    _, plain = plm.adjust_outputs(logits, scores, True, embedding)
    assert torch.equal(plain, scores)  # a fresh readout changes nothing
    with torch.no_grad():
        plm.score_readout[1, 0] = 1.0  # output 0 (row 1) likes channel 0
        plm.score_readout[2, 1] = 1.0  # output 1 (row 2) likes channel 1
    _, ranked = plm.adjust_outputs(logits, scores, True, embedding)
    assert ranked.argmax(dim=1).tolist() == [0, 1]
    torch.testing.assert_close(ranked, scores + torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    with torch.no_grad():
        plm.score_readout_bias[1:] = torch.tensor([0.0, -2.0, 5.0])  # the bias: one number per output
    _, biased = plm.adjust_outputs(logits, scores, True, embedding)
    torch.testing.assert_close(biased, ranked + torch.tensor([0.0, -2.0, 5.0]))
    plm.reset_offset()
    assert not plm.score_readout.any() and not plm.score_readout_bias.any()


def test_mask_bias_moves_each_outputs_threshold_and_the_features_follow():
    from samplm.adapter.plm import mask_features

    plm = PromptLearningModule(embed_dim=8, num_heads=2, mlp_dim=16)
    embedding = torch.randn(1, 8, 2, 2)
    ramp = torch.linspace(-2.0, 2.0, 8).expand(8, 8)  # a logit ramp along x: the mask grows with a bias
    logits, scores = ramp.repeat(1, 4, 1, 1), torch.rand(1, 4)
    with torch.no_grad():
        plm.mask_bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    masks, _ = plm.adjust_outputs(logits, scores, True, embedding)  # all four outputs, single first
    torch.testing.assert_close(masks, logits + torch.tensor([0.0, 1.0, -1.0, 0.5]).view(1, 4, 1, 1))
    areas = (masks > 0).flatten(2).sum(-1)[0].tolist()
    assert areas[1] > areas[0] > areas[2]  # a positive bias grows the mask, a negative one shrinks it
    multi, _ = plm.adjust_outputs(logits[:, 1:], scores[:, 1:], True, embedding)  # the multimask rows
    torch.testing.assert_close(multi, masks[:, 1:])
    single, _ = plm.adjust_outputs(logits[:, :1], scores[:, :1], False, embedding)
    torch.testing.assert_close(single, logits[:, :1])  # row 0's bias is 0
    with torch.no_grad():
        plm.score_readout[1, 0] = 1.0
    _, ranked = plm.adjust_outputs(logits, scores, True, embedding)
    # the readout reads the features under the biased masks
    expected = mask_features(masks, embedding)[0, 1, 0]
    torch.testing.assert_close(ranked[0, 1] - scores[0, 1], expected)
    plm.reset_offset()
    assert not plm.mask_bias.any()
