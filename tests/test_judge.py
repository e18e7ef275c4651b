"""A run's judgement: plain SAM and SAM-F validated before the first step, the best candidate exported,
early stopping; on a tiny SAM with a six-image task."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from conftest import write_rect_dataset
from segment_anything import SamPredictor

from samplm import AdapterConfig, CustomSamPredictor, PromptAdapter, decode_prompts
from samplm.cache.embeddings import EmbeddingCache
from samplm.data import read_mask_folder
from samplm.eval.samf import SamF
from samplm.train.judge import Judgement, candidate_adapter
from samplm.train.score_readout import READOUT_CHOICES
from samplm.train.settings import TrainConfig
from samplm.train.trainer import train


@pytest.fixture(scope="module")
def task(rect_task):
    return rect_task


def _config(**kw):
    base = dict(
        steps=6, batch_size=3, lr=1e-3, warmup_steps=0, val_every=2, checkpoint_every=2, pmm_points=12
    )
    return TrainConfig(**{**base, **kw})


def test_judgement_keeps_the_earlier_candidate_on_ties_and_takes_a_strictly_better_one():
    judged = Judgement(sam=0.5, samf=0.6, samf_weights=(0.2, 0.3, 0.5), selected="samf")
    assert not judged.consider(0.6, 10) and judged.selected == "samf"  # a tie keeps SAM-F
    assert judged.trained == 0.6 and judged.trained_step == 10
    assert not judged.consider(0.55, 20) and judged.trained_step == 10  # worse: nothing changes
    assert judged.consider(0.61, 30) and judged.selected == "trained" and judged.best == 0.61
    line = judged.line()
    assert "trained adapter" in line and "plain SAM 50.00" in line and "SAM-F 60.00" in line
    assert "trained 61.00 (step 30)" in line
    assert Judgement.from_state(judged.to_state()) == judged
    fresh = Judgement(sam=0.5, samf=0.4, samf_weights=(1 / 3, 1 / 3, 1 / 3))
    assert fresh.metrics()["val_miou_trained"] is None and "not validated" in fresh.line()


def test_samf_candidate_answers_with_the_samf_blend(tiny_sam, task):
    train_set, _ = task
    template = PromptAdapter(AdapterConfig(task="rect", pmm={"num_points": 12}))
    samf = SamF(0.7, 0.5)
    candidate = candidate_adapter(template, samf)
    assert candidate.pmm is None and candidate.task == "rect"
    item = train_set.items[0]
    embedding = train_set.embedding(item)
    clicks = dict(point_coords=torch.tensor([[[20.0, 30.0]]]), point_labels=torch.tensor([[1]]))
    with torch.no_grad():
        plain = decode_prompts(tiny_sam, embedding, **clicks)
        blended = decode_prompts(tiny_sam, embedding, **clicks, plm=candidate.plm)
    for output in range(3):
        torch.testing.assert_close(
            blended.low_res_logits[:, output : output + 1], samf.blend(plain.low_res_logits)
        )
    torch.testing.assert_close(blended.iou_predictions, plain.iou_predictions)


def test_untrained_adapter_is_exported_when_training_cannot_beat_it(tmp_path, tiny_sam, task):
    """With a learning rate too small to change any mask, no validation beats the candidates judged
    before the first step: the exported adapter answers exactly as plain SAM (or SAM-F's blend)."""
    train_set, val_set = task
    result = train(
        copy.deepcopy(tiny_sam),
        train_set,
        tmp_path,
        config=_config(lr=1e-12),
        val_set=val_set,
        progress=False,
    )
    judged = result.judgement
    assert judged.selected in ("sam", "samf") and judged.trained <= judged.best
    assert math.isclose(result.metrics["val_miou"], max(judged.sam, judged.samf), abs_tol=1e-6)
    if judged.selected == "sam":  # the exported adapter is plain SAM, bit for bit
        custom, plain = CustomSamPredictor(tiny_sam), SamPredictor(tiny_sam)
        custom.load_adapter(result.adapter_dir)
        image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
        for predictor in (custom, plain):
            predictor.set_image(image)
        click = dict(point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]))
        for ours, theirs in zip(custom.predict(**click), plain.predict(**click), strict=True):
            np.testing.assert_array_equal(ours, theirs)
    else:
        weights = PromptAdapter.load(result.adapter_dir).plm.mask_mix.detach()
        torch.testing.assert_close(weights[0], torch.tensor(judged.samf_weights, dtype=weights.dtype))


def test_patience_stops_the_run_and_a_resumed_run_stays_stopped(tmp_path, tiny_sam, task):
    train_set, val_set = task
    config = _config(steps=40, lr=1e-12, val_every=1, checkpoint_every=10, patience=2)
    result = train(
        copy.deepcopy(tiny_sam), train_set, tmp_path, config=config, val_set=val_set, progress=False
    )
    # Validation 1 sets the trained figure; 2 and 3 are no better: stopped after step 3.
    assert result.steps == 3
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "val_miou" in x] == [1, 2, 3]
    again = train(
        copy.deepcopy(tiny_sam), train_set, tmp_path, config=config, val_set=val_set, progress=False
    )
    assert again.steps == 3 and again.judgement == result.judgement
    assert (tmp_path / "adapter" / "prototype.safetensors").is_file()  # a stopped run is finished


def test_small_sets_are_judged_by_k_fold_and_the_winner_made_from_every_image(tmp_path, tiny_sam):
    from samplm.train.fit import _first_steps, fit_adapter, image_folds, plan_for

    root = write_rect_dataset(tmp_path / "data")
    dataset = read_mask_folder(root / "images", root / "masks")
    cache = EmbeddingCache.for_model(root / "cache", tiny_sam)
    cache.build(tiny_sam, dataset.image_paths(), progress=False)
    plan = plan_for(dataset)
    images = len(dataset.image_paths())
    assert (
        plan.kind == "kfold"
        and plan.folds == min(5, images)
        and f"over all {images} images" in plan.describe()
    )
    assert plan_for(dataset, split=True).kind == "split"
    folds = image_folds(dataset, plan.folds, seed=0)
    held = [i.instance_id for fold in folds for i in fold]
    assert sorted(held) == sorted(i.instance_id for i in dataset) and all(len(f) for f in folds)
    config = _config(steps=4, val_every=2, lr=1e-3, readout_min_instances=1)
    adapter_config = AdapterConfig(task="rect", pmm={"num_points": 12})
    result = fit_adapter(
        copy.deepcopy(tiny_sam),
        dataset,
        None,
        cache,
        tmp_path / "run",
        config=config,
        adapter_config=adapter_config,
        plan=plan,
        progress=False,
    )
    judged = result.judgement
    assert f"{plan.folds}-fold validation" in judged.line()
    assert sorted(p.name for p in (tmp_path / "run" / "folds").iterdir()) == [
        str(k) for k in range(plan.folds)
    ]
    curves = [
        {
            r["step"]: r["val_miou"]
            for r in map(
                json.loads, (tmp_path / "run" / "folds" / str(k) / "metrics.jsonl").read_text().splitlines()
            )
            if "val_miou" in r
        }
        for k in range(plan.folds)
    ]
    assert judged.trained_step in (2, 4)  # the best mean over the folds
    means = {step: float(np.mean([c[step] for c in curves])) for step in (2, 4)}
    assert math.isclose(judged.trained, max(means.values()), abs_tol=1e-9)
    saved = PromptAdapter.load(tmp_path / "run" / "adapter")
    assert saved.config.metadata["selection"] == judged.line()
    assert (saved.pmm is not None) == (judged.selected == "trained")
    # every fold fitted readouts: their mean gain decides whether the final adapter gets one
    assert len(judged.readouts) == len(READOUT_CHOICES) and "score readout" in judged.line()
    assert bool(saved.plm.score_readout.any()) is judged.readout_kept
    # The final run reproduces the schedule's first steps: the same learning rate at each of them.
    short = _first_steps(TrainConfig(steps=100, warmup_steps=10), 70)
    assert [short.lr_factor(s) for s in range(70)] == [
        TrainConfig(steps=100, warmup_steps=10).lr_factor(s) for s in range(70)
    ]


def test_a_fresh_run_in_a_used_folder_logs_one_judgement(tmp_path, tiny_sam, task):
    train_set, val_set = task
    for _ in range(2):  # the second run starts over (resume=False) in the same folder
        train(
            copy.deepcopy(tiny_sam),
            train_set,
            tmp_path,
            config=_config(steps=2),
            val_set=val_set,
            resume=False,
            progress=False,
        )
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "val_miou_sam" in x] == [0]
