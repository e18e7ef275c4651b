"""The training loop: PLM (+ PMM) on a frozen SAM, from cached embeddings.

A run is a few named steps: :func:`~samplm.train.run_setup.setup_run` (adapter, optimiser, processes), the
lock on the output directory, :func:`~samplm.train.checkpoints.resume_run` (from the last checkpoint), the
candidates judged before training (:mod:`samplm.train.validation`), then per optimiser step
:func:`_step` (batches from :mod:`samplm.train.batch` through
:class:`~samplm.train.step_model.StepModel`), its ``metrics.jsonl`` line (:mod:`samplm.train.metrics_log`),
validation (centre-click mIoU, best adapter exported) and checkpointing
(:mod:`samplm.train.checkpoints`), and a final export (:mod:`samplm.train.outputs`). Several processes
train through :mod:`samplm.train.distributed`. Random draws come from a stream seeded by (seed, step,
process), and checkpoints hold the adapter, optimiser and scheduler states, so a resumed run continues
exactly where it stopped.

Failures are loud (docs/reliability.md): checkpoints are verified against their SHA-256, a
resumed run must have the same optimisation settings, a second run on one output directory is refused,
and a NaN or infinite loss stops the run before it reaches the adapter, which is never exported non-finite.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..adapter.config import AdapterConfig
from ..adapter.prompt_adapter import PromptAdapter
from ..errors import NonFiniteError
from ..utils.files import lock_directory
from ..utils.progress import progress_bar
from ..utils.threads import stage_threads, thread_limit, torch_threads
from .batch import PromptGroup, build_batch, describe_batch
from .checkpoints import resume_run, resumed_line, save_checkpoint
from .judge import Judgement
from .metrics_log import metrics_log
from .outputs import ADAPTER_DIRNAME, finish_run
from .run_setup import TrainingRun, setup_run
from .settings import TrainConfig
from .training_set import TrainingSet
from .validation import judge_candidates, judge_readout, validate


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        adapter: the exported adapter, read back from disk: with a validation set the best candidate
            (plain SAM, SAM-F's blend or the trained adapter at its best validation), else the final one.
        adapter_dir: where it was exported.
        metrics: its metrics (``val_miou``, ``step``; with validation also each candidate's figure).
        steps: optimiser steps done.
        last: the adapter as it is after the last step (in memory, on this process).
        judgement: the candidates' validation figures and the choice (``None`` without validation).
    """

    adapter: PromptAdapter
    adapter_dir: Path
    metrics: dict[str, Any]
    steps: int
    last: PromptAdapter
    judgement: Judgement | None = None


def train(
    sam: Any,
    train_set: TrainingSet,
    out_dir: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    val_set: TrainingSet | None = None,
    adapter_config: AdapterConfig | None = None,
    model_type: str | None = None,
    device: str | torch.device = "cpu",
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    threads: int | str | None = None,
) -> TrainResult:
    """Train an adapter and export the best one to ``out_dir/adapter``.

    Under ``accelerate launch`` / ``torchrun`` with several processes, each process draws its own
    ``batch_size`` instances per step (global batch = ``batch_size`` x processes) and gradients are
    averaged (DDP); the main process validates, logs, checkpoints and exports.

    Args:
        sam: the SAM (frozen here; its image encoder is not used).
        train_set, val_set: targets + cached embeddings; validation is skipped without ``val_set``.
        out_dir: receives ``adapter/`` (with ``prototype.safetensors``, the training masks' mean
            embedding for click-free segmentation), ``checkpoints/last.pt``, ``metrics.jsonl``,
            ``train_config.json`` (and ``tensorboard/`` when TensorBoard is installed).
        config: training settings (paper defaults).
        adapter_config: task name, PLM settings, metadata; a PMM section is added when ``use_pmm``.
        model_type: recorded in the adapter config.
        device: where to train (under a multi-process launch, each process's own device).
        resume: continue from ``out_dir/checkpoints/last.pt`` if present (its checksum verified, with
            the same optimisation settings); ``False`` starts over (``metrics.jsonl`` afresh).
        progress: show a progress bar and, when resuming, one line ``resumed from step N (checkpoint
            PATH)``.
        stop_after: stop (after checkpointing) once this many steps are done in total - for
            splitting a run over several sessions; ``None`` runs to ``config.steps``.
        threads: at most this many CPU threads (``None`` / ``"auto"``: what torch has); each step
            decides anew, one thread while the machine is oversubscribed
            (:func:`samplm.utils.threads.stage_threads`).

    Raises:
        RunLockedError: another run holds ``out_dir`` (the main process locks ``out_dir/.lock``).
        CheckpointError: the checkpoint to resume from is truncated, corrupted or not a checkpoint.
        ResumeMismatchError: resuming with optimisation settings other than the checkpoint's.
        NonFiniteError: a NaN or infinite loss (naming the batch's images) or adapter weight.
    """
    config = config or TrainConfig()
    run = setup_run(sam, train_set, val_set, Path(out_dir), config, adapter_config, model_type, device)
    last = min(config.steps, stop_after) if stop_after is not None else config.steps
    cap = thread_limit(threads) or torch.get_num_threads()  # the count before any stage lowers it
    with contextlib.ExitStack() as lock:
        lock.enter_context(torch_threads(stage_threads(cap)))
        if run.procs.is_main:  # one run per output directory; released on any exit
            lock.enter_context(lock_directory(run.out))
        if resume_run(run, resume) and progress and run.procs.is_main:
            print(resumed_line(run), flush=True)
        if val_set is not None and run.state["judgement"] is None:
            judge_candidates(run)
        _train_steps(run, last, progress, cap)
        if run.procs.is_main and run.finished():
            judge_readout(run)
            finish_run(run, progress)
        run.procs.wait()
        adapter_dir = run.out / ADAPTER_DIRNAME
        best = PromptAdapter.load(adapter_dir) if adapter_dir.is_dir() else run.adapter
    metrics, steps = dict(run.state["best_metrics"]), run.state["step"]
    return TrainResult(best, adapter_dir, metrics, steps, run.adapter, run.state["judgement"])


def _train_steps(run: TrainingRun, last: int, progress: bool, threads: int) -> None:
    """Steps up to ``last``, with logging, validation and checkpoints (the main process writes); each
    step with :func:`~samplm.utils.threads.stage_threads` of at most ``threads``."""
    config, main = run.config, run.procs.is_main
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(metrics_log(run.out, tensorboard=True)) if main else None
        bar = stack.enter_context(
            progress_bar(
                total=config.steps,
                initial=run.state["step"],
                desc="training",
                unit="step",
                disable=not (progress and main),
            )
        )
        while run.state["step"] < last and not run.state["stopped"]:
            started = time.perf_counter()
            with torch_threads(stage_threads(threads)):
                totals = _step(run)
            step = run.state["step"]
            bar.update(1)
            bar.set_postfix(loss=f"{totals['loss']:.4f}", iou=f"{totals['iou']:.3f}")
            if main and (step % config.log_every == 0 or step == last):
                log.write(_step_record(run, totals, time.perf_counter() - started))
            if run.val_set is not None and (step % config.val_every == 0 or step == config.steps):
                with torch_threads(stage_threads(threads)):
                    validate(run, log, bar)
            if main and (step % config.checkpoint_every == 0 or step == last or run.state["stopped"]):
                save_checkpoint(run)


def _step_record(run: TrainingRun, totals: dict[str, float], seconds: float) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of the step just done."""
    record = {"step": run.state["step"], "lr": run.scheduler.get_last_lr()[0], "time": seconds}
    return record | {k: round(v, 6) for k, v in totals.items()}


def _step(run: TrainingRun) -> dict[str, float]:
    """One optimiser step (``grad_accum`` micro-batches); returns the step's mean losses.

    Raises:
        NonFiniteError: the loss is NaN or infinite (on any process); the optimiser step is not taken.
    """
    config, procs, data = run.config, run.procs, run.train_set
    step = run.state["step"] + 1
    run.optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = defaultdict(float)
    suspects: list[PromptGroup] = []
    for micro in range(config.grad_accum):
        batch = _micro_batch(run, step, micro)
        with procs.no_sync(run.model, micro == config.grad_accum - 1):
            losses = run.model(batch, data.cell)
            scaled = losses["loss"] / config.grad_accum
            (run.scaler.scale(scaled) if run.scaler else scaled).backward()
        values = {key: float(value.detach()) for key, value in losses.items()}
        for key, value in values.items():
            totals[key] += value / config.grad_accum
        if not math.isfinite(values["loss"]):
            suspects.extend(batch)
    totals = procs.mean(dict(totals))  # NaN on one process makes the mean NaN: all processes stop
    if not math.isfinite(totals["loss"]):
        where = describe_batch(suspects) if suspects else "a batch of another process"
        raise NonFiniteError(
            f"step {step}: the training loss is {totals['loss']} on {where}; check these images' cache "
            "entries (delete them and re-run `samplm embed`) or lower the learning rate"
        )
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.state["step"] = step
    return totals


def _micro_batch(run: TrainingRun, step: int, micro: int) -> list[PromptGroup]:
    """The batch of one micro-step, drawn from the (seed, step, process, micro-step) stream; also seeds
    torch (dropout in the PMM) from it."""
    config, data = run.config, run.train_set
    rng = _step_rng(config.seed, step, run.procs.rank, micro)
    torch.manual_seed(int(rng.integers(2**62)))
    picks = rng.choice(len(data), size=min(config.batch_size, len(data)), replace=False)
    return build_batch(
        data,
        [data.items[i] for i in picks],
        rng,
        run.sampler,
        device=run.procs.device,
        pmm_jitter=config.pmm_jitter if run.adapter.pmm is not None else None,
    )


def _step_rng(seed: int, step: int, rank: int, micro: int = 0) -> np.random.Generator:
    """The random stream of one (step, process, micro-step): a resumed run makes the same draws as an
    uninterrupted one without storing generator states."""
    return np.random.default_rng([seed, step, rank, micro])
