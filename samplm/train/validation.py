"""A run's validation: centre-click mIoU, the candidates judged before training, and each validation of
the trained adapter against them (:mod:`samplm.train.judge`), the winner exported
(:mod:`samplm.train.outputs`). Only the main process validates; early stopping is agreed by all.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from ..adapter.prompt_adapter import PromptAdapter
from .center_scores import center_click_answers
from .judge import Judgement, judge_baselines
from .metrics_log import MetricsLog, metrics_log
from .outputs import ADAPTER_DIRNAME, export_adapter
from .run_setup import TrainingRun
from .score_readout import has_readout, readout_candidates, without_readout
from .training_set import TrainingSet


@torch.no_grad()
def evaluate_center_miou(
    sam: Any, adapter: PromptAdapter, data: TrainingSet, max_instances: int | None = None
) -> float:
    """Mean IoU at low resolution with one click at each mask's centre, top-confidence mask.

    Each instance's ``1 x C x L x L`` low-res logits (``C`` = 3) are decoded on its
    ``1 x 256 x h x w`` embedding; the mask the IoU head ranks first is scored against the ``L x L``
    target. ``max_instances``: the first that many instances (``None``: all).
    """
    was_training = adapter.training
    adapter.eval()
    ious = [
        float(answer.true_iou[0, answer.output.iou_predictions[0].argmax()])
        for answer in center_click_answers(sam, data, adapter.plm, max_instances)
    ]
    adapter.train(was_training)
    return float(np.mean(ious)) if ious else 0.0


def judge_candidates(run: TrainingRun) -> None:
    """Before the first step (or on resuming a run that has none): validate plain SAM and SAM-F and
    export the better, unless an adapter the run already exported validated better (see :mod:`.judge`)."""
    if run.procs.is_main:
        validate = functools.partial(
            evaluate_center_miou, run.sam, data=run.val_set, max_instances=run.config.val_max_instances
        )
        where = f"validation split, {min(len(run.val_set), run.config.val_max_instances)} instances"
        judgement, candidates = judge_baselines(
            run.sam, run.adapter, run.train_set, validate, seed=run.config.seed, validation=where
        )
        if math.isfinite(run.state["best"]):  # a checkpoint from before judgements: its best competes
            judgement.consider(run.state["best"], int(run.state["best_metrics"].get("step", 0)))
        record_judgement(run, judgement)
        if judgement.selected in candidates:
            export_adapter(candidates[judgement.selected], run.out, run.state["best_metrics"])
        with metrics_log(run.out) as log:
            log.write({"step": 0, "val_miou_sam": judgement.sam, "val_miou_samf": judgement.samf})
    run.procs.wait()


def record_judgement(run: TrainingRun, judgement: Judgement) -> None:
    """Keep ``judgement`` in the loop state with the exported candidate's figure and metrics (``step``:
    the trained adapter's validation step, 0 for plain SAM and SAM-F)."""
    step = judgement.trained_step if judgement.selected == "trained" else 0
    run.state["judgement"] = judgement
    run.state["best"] = judgement.best
    run.state["best_metrics"] = {**judgement.metrics(), "step": step}


def validate(run: TrainingRun, log: MetricsLog | None, bar: Any) -> None:
    """Centre-click validation on the main process (``log``: its metrics, ``None`` on the others): a
    candidate better than every other so far is exported; ``patience`` validations without a better
    trained adapter stop the run (every process)."""
    step, patience = run.state["step"], run.config.patience
    stop = 0.0
    if run.procs.is_main:
        miou = evaluate_center_miou(run.sam, run.adapter, run.val_set, run.config.val_max_instances)
        log.write({"step": step, "val_miou": round(miou, 6)})
        bar.write(f"step {step}: val mIoU (centre click, low-res) {miou:.4f}")
        judgement = run.state["judgement"]
        run.state["stale"] = 0 if miou > judgement.trained else run.state["stale"] + 1
        selected = judgement.consider(miou, step)
        record_judgement(run, judgement)
        if selected:
            export_adapter(run.adapter, run.out, run.state["best_metrics"])
        stop = float(bool(patience) and run.state["stale"] >= patience)
    run.state["stopped"] = run.procs.mean({"stop": stop})["stop"] > 0
    if run.state["stopped"] and run.procs.is_main:
        bar.write(f"step {step}: no better validation in {patience} validations; stopping early")


def judge_readout(run: TrainingRun) -> None:
    """After the last step (main process; nothing without a validation split): fit score readouts (with and
    without a mask bias) for the exported candidate on the training split
    (:mod:`samplm.train.score_readout`), validate each, and export the best one if it validates strictly
    better than the candidate without it (the judgement's line says which). None is fitted on fewer than
    ``readout_min_instances`` training instances."""
    adapter_dir, judgement = run.out / ADAPTER_DIRNAME, run.state["judgement"]
    if judgement is None or not adapter_dir.is_dir():
        return
    chosen = PromptAdapter.load(adapter_dir).to(next(run.adapter.parameters()).device)
    candidates = {}
    if len(run.train_set) >= run.config.readout_min_instances:
        candidates = readout_candidates(run.sam, chosen, run.train_set)
    judgement.readouts = tuple(
        (alpha, biased, evaluate_center_miou(run.sam, adapter, run.val_set, run.config.val_max_instances))
        for (alpha, biased), adapter in candidates.items()
    )
    record_judgement(run, judgement)
    if judgement.readout_kept:
        export_adapter(candidates[judgement.readout_choice], run.out, run.state["best_metrics"])
    elif has_readout(chosen):  # a run finished before and judged again: its old readout goes
        export_adapter(without_readout(chosen), run.out, run.state["best_metrics"])
