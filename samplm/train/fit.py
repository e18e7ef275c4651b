"""Fit an adapter to a dataset the way ``samplm train`` does: a recipe sized to the set, and validation
that fits its size.

- With a validation set given, or :data:`SMALL_SET_IMAGES` images or more: one run, validated on the
  validation set (or a seeded share of the images), judged against plain SAM and SAM-F
  (:mod:`samplm.train.judge`).
- With fewer images: one split would validate on a handful of photos. Instead the images are divided
  into ``k`` folds (``k = min(5, images)``); a run per fold trains on the others and validates on it, all
  with the same schedule. The candidates' figures are averaged over the folds (plain SAM, SAM-F, the
  trained adapter at each validated step); the winner is then made from every image: the untrained
  adapter, SAM-F fitted on every image, or an adapter trained on every image for the winning number of
  steps with the same learning-rate schedule. Each fold's run also fits score readouts for its winner
  (:mod:`samplm.train.score_readout`); when the readout at one ridge strength (with or without a mask
  bias) gains on average over the folds whose winner was the same kind of candidate as the final one, the
  final adapter gets that readout fitted on every image.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..adapter.config import AdapterConfig
from ..adapter.prompt_adapter import PromptAdapter
from ..cache.embeddings import EmbeddingCache
from ..data import InstanceDataset
from ..eval.samf import train_samf
from ..segment.prototype_fitting import training_prototype
from .judge import Judgement, candidate_adapter
from .metrics_log import METRICS_NAME
from .outputs import ADAPTER_DIRNAME, export_adapter
from .score_readout import readout_candidates
from .settings import TrainConfig
from .trainer import TrainResult, train
from .training_set import TrainingSet

#: Below this many images, validation is k-fold over all of them rather than one held-out share. On 30
#: plate photos one split (6 validation photos) exported an adapter 5.8 mIoU below SAM-F on held-out
#: photos; 5-fold judgement exported one 8.6 above it (docs/training.md, "How much data?").
SMALL_SET_IMAGES = 40
MAX_FOLDS = 5
FOLDS_DIRNAME = "folds"


@dataclass
class FitPlan:
    """How a dataset is validated: ``"split"`` (one held-out share or the given set) or ``"kfold"``."""

    kind: str
    folds: int = 1
    images: int = 0

    def describe(self) -> str:
        if self.kind == "kfold":
            return (
                f"{self.folds}-fold validation over all {self.images} images (fewer than {SMALL_SET_IMAGES})"
            )
        return "one validation split"


def plan_for(dataset: InstanceDataset, *, split: bool = False) -> FitPlan:
    """k-fold for fewer than :data:`SMALL_SET_IMAGES` images, else one split; ``split`` (a validation set
    or share chosen by the user) always gives one split."""
    images = len(dataset.image_paths())
    if split or images >= SMALL_SET_IMAGES or images < 2:
        return FitPlan("split", images=images)
    return FitPlan("kfold", folds=min(MAX_FOLDS, images), images=images)


def image_folds(dataset: InstanceDataset, folds: int, seed: int) -> list[InstanceDataset]:
    """``folds`` disjoint parts of ``dataset`` by image (all instances of an image in one part),
    images shuffled with ``seed``."""
    paths = dataset.image_paths()
    order = np.random.default_rng(seed).permutation(len(paths))
    part_of = {paths[index]: rank % folds for rank, index in enumerate(order)}
    return [
        InstanceDataset([i for i in dataset.instances if part_of[i.image_path] == k], source=dataset.source)
        for k in range(folds)
    ]


def cross_validate(
    sam: Any,
    dataset: InstanceDataset,
    cache: EmbeddingCache,
    out: str | os.PathLike[str],
    *,
    config: TrainConfig,
    adapter_config: AdapterConfig,
    folds: int,
    model_type: str | None = None,
    device: str | torch.device = "cpu",
    num_points: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """k-fold judgement over every image of ``dataset``, then the winner made from all of them.

    Each fold's run lives in ``out/folds/<k>/`` (and resumes there); the final adapter is written to
    ``out/adapter`` with the averaged figures in its card. Early stopping is off in the folds, so every
    fold validates the same steps.
    """
    out = Path(out)
    parts = image_folds(dataset, folds, config.seed)
    fold_config = dataclasses.replace(config, patience=0)
    judgements, curves = [], []
    for k, held_out in enumerate(parts):
        held_ids = {i.instance_id for i in held_out.instances}
        rest = InstanceDataset(
            [i for i in dataset.instances if i.instance_id not in held_ids], source=dataset.source
        )
        run_dir = out / FOLDS_DIRNAME / str(k)
        sets = [TrainingSet(p, cache, sam, num_points=num_points, progress=False) for p in (rest, held_out)]
        result = train(
            sam,
            sets[0],
            run_dir,
            config=fold_config,
            val_set=sets[1],
            adapter_config=adapter_config,
            model_type=model_type,
            device=device,
            progress=False,
        )
        judgements.append(result.judgement)
        curves.append(_validation_curve(run_dir / METRICS_NAME))
    judgement = _mean_judgement(judgements, curves, f"{folds}-fold validation")
    all_set = TrainingSet(dataset, cache, sam, num_points=num_points, progress=False)
    return _make_winner(sam, all_set, out, config, adapter_config, judgement, model_type, device, progress)


def _validation_curve(path: Path) -> dict[int, float]:
    """``{step: val mIoU}`` of a run's ``metrics.jsonl``."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {int(r["step"]): float(r["val_miou"]) for r in records if "val_miou" in r}


def _mean_judgement(judgements: list[Judgement], curves: list[dict[int, float]], where: str) -> Judgement:
    """The folds' figures averaged: plain SAM, SAM-F and, per step validated in every fold, the trained
    adapter; the best step becomes the trained candidate (ties: the earlier step). Its readout figures
    come from the folds that chose the same kind of candidate (:func:`_mean_readouts`)."""
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    mean = Judgement(
        sam=float(np.mean([j.sam for j in judgements])),
        samf=float(np.mean([j.samf for j in judgements])),
        samf_weights=judgements[0].samf_weights,
        validation=where,
    )
    mean.selected = "samf" if mean.samf > mean.sam else "sam"
    for step in steps:
        mean.consider(float(np.mean([c[step] for c in curves])), step)
    mean.readouts = _mean_readouts(judgements, mean.selected, getattr(mean, mean.selected))
    return mean


def _mean_readouts(
    judgements: list[Judgement], selected: str, figure: float
) -> tuple[tuple[float, bool, float], ...]:
    """``(ridge strength, with the mask bias, figure + the mean gain from that readout)`` over the folds
    whose own winner was the ``selected`` kind of candidate (a fold's gain: its readout's figure minus its
    winner's); empty when no such fold fitted readouts."""
    folds = [j for j in judgements if j.selected == selected and j.readouts]
    if not folds:
        return ()
    figures = [{(a, b): f for a, b, f in j.readouts} for j in folds]
    choices = list(figures[0])
    gains = [
        float(np.mean([fold[c] - getattr(j, j.selected) for fold, j in zip(figures, folds, strict=True)]))
        for c in choices
    ]
    return tuple((*choice, figure + gain) for choice, gain in zip(choices, gains, strict=True))


def _make_winner(
    sam: Any,
    all_set: TrainingSet,
    out: Path,
    config: TrainConfig,
    adapter_config: AdapterConfig,
    judgement: Judgement,
    model_type: str | None,
    device: str | torch.device,
    progress: bool,
) -> TrainResult:
    """The judged candidate made from every image (with a readout fitted on every image when the folds
    kept one) and exported to ``out/adapter`` with the line and the prototype."""
    if judgement.selected == "trained":
        result = train(
            sam,
            all_set,
            out,
            config=_first_steps(config, judgement.trained_step),
            adapter_config=adapter_config,
            model_type=model_type,
            device=device,
            progress=progress,
        )
        adapter, steps, last = result.adapter, result.steps, result.last
    else:
        template = PromptAdapter(dataclasses.replace(adapter_config, pmm=None))
        template.bind_base_model(sam, model_type=model_type)
        samf = None
        if judgement.selected == "samf":
            samf = train_samf(sam, all_set, seed=config.seed, device=device, progress=False)
            judgement.samf_weights = samf.weights
        adapter = candidate_adapter(template.to(device), samf)
        steps, last = 0, adapter
    if judgement.readout_kept:
        choice = judgement.readout_choice
        adapter = readout_candidates(sam, adapter, all_set, (choice,))[choice]
    metrics = {**judgement.metrics(), "step": steps}
    # a trained adapter was loaded with the prototype its training run wrote
    prototype = None if judgement.selected == "trained" else training_prototype(all_set, adapter.task)
    export_adapter(adapter, out, metrics, judgement.line(), prototype)
    if progress:
        print(judgement.line(), flush=True)
    adapter_dir = out / ADAPTER_DIRNAME
    return TrainResult(PromptAdapter.load(adapter_dir), adapter_dir, metrics, steps, last, judgement)


def _first_steps(config: TrainConfig, steps: int) -> TrainConfig:
    """``config`` run for its first ``steps`` steps only, with the same learning rate at every one of
    them (the decays that fall within those steps kept at the same step)."""
    decay_steps = [round(f * config.steps) for f in config.decay_at]
    decay_at = tuple(s / steps for s in decay_steps if 0 < s < steps)
    return dataclasses.replace(config, steps=steps, decay_at=decay_at, patience=0)


def fit_adapter(
    sam: Any,
    train_part: InstanceDataset,
    val_part: InstanceDataset | None,
    cache: EmbeddingCache,
    out: str | os.PathLike[str],
    *,
    config: TrainConfig,
    adapter_config: AdapterConfig,
    plan: FitPlan,
    model_type: str | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train and judge on ``train_part`` as ``plan`` says (``val_part``: the split's validation part,
    ignored for k-fold, where ``train_part`` holds every image)."""
    points = config.pmm_points if config.use_pmm else None
    if plan.kind == "kfold":
        return cross_validate(
            sam,
            train_part,
            cache,
            out,
            config=config,
            adapter_config=adapter_config,
            folds=plan.folds,
            model_type=model_type,
            device=device,
            num_points=points,
            progress=progress,
        )
    sets = [
        TrainingSet(part, cache, sam, num_points=points, progress=progress, description=f"{name} targets")
        for part, name in ((train_part, "train"), (val_part, "val"))
        if part is not None and len(part)
    ]
    return train(
        sam,
        sets[0],
        out,
        config=config,
        val_set=sets[1] if len(sets) > 1 else None,
        adapter_config=adapter_config,
        model_type=model_type,
        device=device,
        resume=resume,
        progress=progress,
    )


__all__ = ["SMALL_SET_IMAGES", "FitPlan", "cross_validate", "fit_adapter", "image_folds", "plan_for"]
