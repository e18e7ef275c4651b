"""The score readout: its ridge fit, its samples, and a run's judgement of it (tiny SAM, six-image task)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from samplm import AdapterConfig, PromptAdapter
from samplm.train import score_readout
from samplm.train.center_scores import center_click_answers
from samplm.train.judge import Judgement
from samplm.train.score_readout import (
    MASK_BIASES,
    READOUT_CHOICES,
    ReadoutSamples,
    fit_mask_bias,
    fit_readout,
    has_readout,
    mask_bias_ious,
    readout_candidates,
    readout_samples,
    with_readout,
    without_readout,
)
from samplm.train.settings import TrainConfig
from samplm.train.trainer import train
from samplm.train.validation import evaluate_center_miou


def test_the_ridge_fit_recovers_a_linear_rule_per_output():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(400, 3, 5, generator=generator)
    weights = torch.randn(3, 5, generator=generator)
    intercepts = torch.tensor([0.1, -0.2, 0.3])
    residuals = (features * weights).sum(-1) + intercepts
    readout, bias = fit_readout(ReadoutSamples(features, residuals), alpha=1e-6)
    assert readout.shape == (4, 5) and bias.shape == (4,)
    assert not readout[0].any() and bias[0] == 0  # the single-mask output is never ranked
    torch.testing.assert_close(readout[1:], weights, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bias[1:], intercepts, atol=1e-4, rtol=1e-4)
    shrunk, _ = fit_readout(ReadoutSamples(features, residuals), alpha=1e4)
    assert shrunk[1:].norm() < 0.1 * weights.norm()  # a strong ridge keeps the readout small
    with pytest.raises(ValueError, match="n x 3 x E"):
        fit_readout(ReadoutSamples(features[:, :2], residuals[:, :2]), alpha=1.0)


def test_samples_are_taken_with_the_readout_zero(tiny_sam, rect_task, adapter_factory):
    train_set, _ = rect_task
    adapter = adapter_factory("rect")
    assert adapter.plm.score_readout.any()
    with pytest.raises(ValueError, match="readout zero"):
        readout_samples(tiny_sam, adapter, train_set)
    plain = without_readout(adapter)
    assert adapter.plm.score_readout.any() and not plain.plm.score_readout.any()  # a copy
    samples = readout_samples(tiny_sam, plain, train_set)
    n = len(train_set)
    assert samples.features.shape == (n, 3, 256) and samples.residuals.shape == (n, 3)
    assert samples.residuals.abs().max() <= 2.0  # IoU in [0, 1] minus a score near it
    fitted = readout_candidates(tiny_sam, adapter, train_set, ((1.0, False),))[(1.0, False)]
    assert fitted.plm.score_readout.any() and fitted.plm.score_readout_bias.any()
    assert not torch.equal(fitted.plm.score_readout, adapter.plm.score_readout)
    assert not fitted.plm.mask_bias.any()  # a readout without the mask bias
    # the rest is the adapter's, so zeroing the readout gives back the adapter without one
    torch.testing.assert_close(without_readout(fitted).state_dict(), plain.state_dict())


def test_mask_bias_ious_score_each_output_under_each_bias():
    logits = torch.linspace(-3.0, 3.0, 16).expand(16, 16).repeat(1, 3, 1, 1)  # 1 x 3 x 16 x 16 ramps
    target = (logits[0, 0] > -1.0).float()  # the true mask is larger than the logits' own at 0
    ious = mask_bias_ious(logits, target, torch.tensor(MASK_BIASES))
    assert ious.shape == (len(MASK_BIASES), 3)
    assert MASK_BIASES[int(ious[:, 0].argmax())] == 1.0 and ious[:, 0].max() == 1.0
    assert ious[MASK_BIASES.index(0.0), 0] < 1.0


def test_the_fitted_mask_bias_is_each_outputs_best_on_the_training_clicks(
    tiny_sam, rect_task, adapter_factory
):
    train_set, _ = rect_task
    plain = without_readout(adapter_factory("rect"))
    with pytest.raises(ValueError, match="bias zero"):
        fit_mask_bias(tiny_sam, adapter_factory("rect"), train_set)
    fitted = fit_mask_bias(tiny_sam, plain, train_set)
    assert fitted.shape == (4,) and fitted[0] == 0 and set(fitted[1:].tolist()) <= set(MASK_BIASES)
    grid = torch.tensor(MASK_BIASES)
    answers = list(center_click_answers(tiny_sam, train_set, plain.plm))
    mean = torch.stack([mask_bias_ious(a.output.low_res_logits, a.target, grid) for a in answers]).mean(0)
    for output in range(3):  # no bias of the grid does better for any output than the fitted one
        chosen = MASK_BIASES.index(float(fitted[1 + output]))
        assert mean[chosen, output] >= mean[:, output].max() - 1e-6
        assert mean[chosen, output] >= mean[MASK_BIASES.index(0.0), output]
    biased = readout_candidates(tiny_sam, plain, train_set, ((1.0, True),))[(1.0, True)]
    torch.testing.assert_close(biased.plm.mask_bias, fitted)


def test_a_run_fits_a_readout_for_its_winner_and_keeps_it_only_when_it_validates_better(
    tmp_path, tiny_sam, rect_task
):
    train_set, val_set = rect_task
    config = _short_config()
    result = train(
        copy.deepcopy(tiny_sam), train_set, tmp_path, config=config, val_set=val_set, progress=False
    )
    judged = result.judgement
    assert [(alpha, biased) for alpha, biased, _ in judged.readouts] == list(READOUT_CHOICES)
    assert "score readout" in judged.line() and ("kept" in judged.line())
    exported = PromptAdapter.load(result.adapter_dir)
    assert exported.config.metadata["selection"] == judged.line()
    assert result.metrics["score_readout"] is judged.readout_kept
    assert bool(exported.plm.score_readout.any()) is judged.readout_kept
    biased = judged.readout_kept and judged.readout_choice[1]
    assert result.metrics["mask_bias"] is biased
    if not biased:
        assert not exported.plm.mask_bias.any()
    figure = evaluate_center_miou(tiny_sam, exported, val_set, config.val_max_instances)
    # the exported adapter validates at the judged figure: with its readout when kept, else without
    assert math.isclose(figure, judged.best, abs_tol=1e-6)
    assert math.isclose(result.metrics["val_miou"], judged.best, abs_tol=1e-6)


def test_readout_judgement_state_and_line():
    judged = Judgement(sam=0.5, samf=0.6, samf_weights=(0.2, 0.3, 0.5), selected="samf")
    judged.readouts = ((0.1, False, 0.55), (1.0, False, 0.7), (10.0, False, 0.7))
    assert judged.readout_choice == (1.0, False) and judged.readout == 0.7  # ties: the first
    assert judged.readout_kept and judged.best == 0.7
    assert "score readout (ridge 1) 70.00, kept" in judged.line()
    assert judged.metrics()["val_miou"] == 0.7 and judged.metrics()["val_miou_readout"] == 0.7
    assert not judged.metrics()["mask_bias"]
    assert Judgement.from_state(judged.to_state()) == judged
    judged.readouts = (*judged.readouts, (10.0, True, 0.75))
    assert judged.readout_choice == (10.0, True) and judged.metrics()["mask_bias"]
    assert "score readout (ridge 10) and a mask bias 75.00, kept" in judged.line()
    assert Judgement.from_state(judged.to_state()) == judged
    state = judged.to_state()
    state["readouts"] = [[1.0, 0.7]]  # stored before mask biases: a readout without one
    assert Judgement.from_state(state).readouts == ((1.0, False, 0.7),)
    judged.readouts = ((1.0, True, 0.6),)  # a tie with the candidate without it: not kept
    assert not judged.readout_kept and judged.best == 0.6 and "not kept" in judged.line()
    assert judged.consider(0.65, 10) and judged.readouts == ()  # a new winner drops the old readout


def test_a_fresh_adapter_has_a_zero_readout_and_answers_as_plain_sam():
    adapter = PromptAdapter(AdapterConfig(task="t"))
    assert not adapter.plm.score_readout.any() and not adapter.plm.mask_bias.any()
    assert adapter.plm.score_readout.shape == (4, 256)
    assert {"plm.score_readout", "plm.score_readout_bias", "plm.mask_bias"} <= set(adapter.state_dict())
    assert adapter.num_parameters("plm") == 1_578_765  # a buffer, not a trained parameter


def _short_config(**changes):
    """Six steps, no PMM; a readout fitted on the four training instances (below the default minimum)."""
    settings = dict(steps=6, batch_size=3, lr=1e-3, warmup_steps=0, val_every=2, checkpoint_every=2)
    return TrainConfig(**{**settings, "use_pmm": False, "readout_min_instances": 1, **changes})


def test_a_run_on_fewer_instances_than_the_minimum_fits_no_readout(tmp_path, tiny_sam, rect_task):
    train_set, val_set = rect_task
    config = _short_config(readout_min_instances=len(train_set) + 1)
    result = train(
        copy.deepcopy(tiny_sam), train_set, tmp_path, config=config, val_set=val_set, progress=False
    )
    assert result.judgement.readouts == () and "score readout" not in result.judgement.line()
    assert not has_readout(PromptAdapter.load(result.adapter_dir))
    assert TrainConfig().readout_min_instances == 8


def test_a_checkpoint_from_before_the_readout_resumes(tmp_path, tiny_sam, rect_task):
    import hashlib
    import io

    from samplm.utils.files import write_checksums

    train_set, val_set = rect_task
    run = dict(config=_short_config(), val_set=val_set, progress=False)
    train(copy.deepcopy(tiny_sam), train_set, tmp_path, stop_after=2, **run)
    path = tmp_path / "checkpoints" / "last.pt"
    payload = torch.load(path, weights_only=True)
    del payload["adapter"]["plm.score_readout"], payload["adapter"]["plm.score_readout_bias"]
    del payload["adapter"]["plm.mask_bias"]
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())
    write_checksums(path, [hashlib.sha256(buffer.getvalue()).hexdigest()])
    result = train(copy.deepcopy(tiny_sam), train_set, tmp_path, **run)
    assert result.steps == 6 and len(result.judgement.readouts) == len(READOUT_CHOICES)


def test_a_finished_run_judged_again_leaves_no_stale_readout(tmp_path, tiny_sam, rect_task):
    train_set, val_set = rect_task
    run = dict(config=_short_config(), val_set=val_set, progress=False)
    first = train(copy.deepcopy(tiny_sam), train_set, tmp_path, **run)
    # a readout the judgement did not fit (as from an earlier judgement that kept one)
    stale = PromptAdapter.load(first.adapter_dir)
    stale = with_readout(
        stale, torch.full((4, 256), 0.3), torch.tensor([0.0, -5.0, 5.0, -5.0]), torch.full((4,), 7.0)
    )
    stale.save_pretrained(first.adapter_dir)
    again = train(copy.deepcopy(tiny_sam), train_set, tmp_path, **run)
    exported = PromptAdapter.load(again.adapter_dir)
    assert again.judgement.readouts == first.judgement.readouts  # judged anew from the readout-free adapter
    assert has_readout(exported) is again.judgement.readout_kept
    assert not (exported.plm.mask_bias == 7.0).any()
    if not again.judgement.readout_kept:
        assert not exported.plm.score_readout_bias.any() and not exported.plm.mask_bias.any()
    else:
        assert exported.plm.score_readout_bias[1] != -5.0


def test_candidates_decode_the_training_clicks_once_per_set_of_masks(
    monkeypatch, tiny_sam, rect_task, adapter_factory
):
    train_set, _ = rect_task
    adapter = adapter_factory("rect")
    plain = without_readout(adapter)
    bias = fit_mask_bias(tiny_sam, plain, train_set)
    plain_samples = readout_samples(tiny_sam, plain, train_set)
    biased_start = with_readout(plain, plain.plm.score_readout, plain.plm.score_readout_bias, bias)
    biased_samples = readout_samples(tiny_sam, biased_start, train_set)
    passes = []
    real = score_readout.center_click_answers

    def counted(*args, **kwargs):  # the real decoding, counted
        passes.append(len(passes))
        return real(*args, **kwargs)

    monkeypatch.setattr(score_readout, "center_click_answers", counted)
    candidates = readout_candidates(tiny_sam, adapter, train_set)
    assert len(passes) == 2  # the unbiased masks once (readout and mask bias), the biased masks once
    for (alpha, biased), fitted in candidates.items():
        samples = biased_samples if biased else plain_samples
        readout, readout_bias = fit_readout(samples, alpha)
        torch.testing.assert_close(fitted.plm.score_readout, readout)
        torch.testing.assert_close(fitted.plm.score_readout_bias, readout_bias)
        torch.testing.assert_close(fitted.plm.mask_bias, bias if biased else torch.zeros(4))
    passes.clear()
    readout_candidates(tiny_sam, adapter, train_set, ((1.0, False),))
    assert len(passes) == 1
