"""The training loop: PLM (+ PMM) on a frozen SAM, from cached embeddings.

A run is a few named steps: :func:`_setup` (adapter, optimiser, processes), the lock on the output
directory, :func:`_resume` (from the last checkpoint), then per optimiser step :func:`_step` (batches from
:mod:`samplm.train.batch` through :class:`StepModel`), :func:`_validate` (centre-click mIoU, best adapter
exported) and checkpointing, and a final export. Random draws come from a stream seeded by (seed, step,
process), and checkpoints hold the adapter, optimiser and scheduler states, so a resumed run continues
exactly where it stopped.

Failures are loud (docs/reliability.md): checkpoints are verified against their SHA-256, a
resumed run must have the same optimisation settings, a second run on one output directory is refused,
and a NaN or infinite loss stops the run before it reaches the adapter, which is never exported non-finite.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import Tensor, nn

from ..adapter import sample_point_features
from ..adapter.config import AdapterConfig, PMMConfig
from ..adapter.prompt_adapter import PromptAdapter
from ..decoder.decode import decode_prompts
from ..errors import CheckpointError, NonFiniteError, ResumeMismatchError
from ..prompts.center_click import decode_center_click
from ..prompts.sampling import PromptSampler
from ..segment.prototype_fitting import training_prototype
from ..utils.files import (
    atomic_write,
    atomic_write_text,
    checksum_path,
    lock_directory,
    read_checksums,
    write_checksums,
)
from ..utils.progress import progress_bar
from .batch import PromptGroup, build_batch, describe_batch
from .judge import Judgement, judge_baselines
from .losses import mask_iou, point_matching_loss, segmentation_loss
from .settings import TrainConfig
from .training_set import TrainingSet

CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "train_config.json"
ADAPTER_DIRNAME = "adapter"
#: Settings that may differ when a run resumes: they change what is logged, validated and saved, not
#: the optimisation (``extra`` holds notes such as the recipe's name).
RESUMABLE_CHANGES = frozenset(
    {"val_every", "val_max_instances", "checkpoint_every", "log_every", "patience", "extra"}
)
#: The loop's state in a checkpoint; ``judgement``, ``stale`` and ``stopped`` are absent from checkpoints
#: of runs that did not judge candidates and take these values then.
STATE_DEFAULTS: dict[str, Any] = {"judgement": None, "stale": 0, "stopped": False}
STATE_KEYS = ("step", "best", "best_metrics", *STATE_DEFAULTS)


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


def freeze(sam: Sam) -> Sam:
    """Put SAM in eval mode with no parameter requiring gradients."""
    sam.eval()
    for param in sam.parameters():
        param.requires_grad_(False)
    return sam


class StepModel(nn.Module):
    """The trainable adapter behind one ``forward`` that turns a batch into its losses.

    Wrapping the loss computation in a module lets ``accelerate``/DDP synchronise gradients; the
    frozen SAM is held outside the module's parameters so it is never broadcast or all-reduced.
    """

    def __init__(self, adapter: PromptAdapter, sam: Sam, config: TrainConfig) -> None:
        super().__init__()
        self.adapter = adapter
        object.__setattr__(self, "sam", sam)
        self.config = config

    def forward(self, batch: list[PromptGroup], cell: float) -> dict[str, Tensor]:
        """Losses of a batch (``cell``: input-frame pixels per embedding cell, the PMM loss unit).

        Returns:
            ``loss`` (to minimise), ``seg_loss``, ``pm_loss`` and ``iou`` (of the trained masks), each
            averaged over the batch's prompts.
        """
        config = self.config
        device = next(self.adapter.parameters()).device
        seg_total = torch.zeros((), device=device)
        pm_total = torch.zeros((), device=device)
        iou_total = torch.zeros((), device=device)
        half = torch.bfloat16 if config.precision == "bf16" else torch.float16
        for group in batch:
            with torch.autocast(device.type, dtype=half, enabled=config.precision != "no"):
                output = decode_prompts(
                    self.sam,
                    group.embedding,
                    point_coords=group.point_coords,
                    point_labels=group.point_labels,
                    boxes=group.boxes,
                    multimask_output=config.multimask != "single",
                    plm=self.adapter.plm,
                    return_image_features=self.adapter.pmm is not None,
                )
            seg, _, iou = segmentation_loss(
                output.low_res_logits.float(),
                output.iou_predictions.float(),
                group.targets,
                focal_weight=config.focal_weight,
                dice_weight=config.dice_weight,
                iou_weight=config.iou_weight,
                reduce="all" if config.multimask == "all" else "min",
            )
            seg_total = seg_total + seg.sum()
            iou_total = iou_total + iou.detach().sum()
            if self.adapter.pmm is not None:
                pm_total = pm_total + self._pmm_loss(output.image_features, group, cell).sum()
        n = sum(len(group) for group in batch)
        loss = (seg_total + config.pm_weight * pm_total) / n
        return {"loss": loss, "seg_loss": seg_total / n, "pm_loss": pm_total / n, "iou": iou_total / n}

    def _pmm_loss(self, features: Tensor, group: PromptGroup, cell: float) -> Tensor:
        """Point matching loss (Eq. 4) in units of embedding cells; ``features``: ``B x 256 x h x w``."""
        starts = group.pmm_starts
        point_features = sample_point_features(features.float(), starts, self.sam.image_encoder.img_size)
        predicted = starts + self.adapter.pmm(point_features)
        return point_matching_loss(group.contours / cell, predicted / cell)


class _Processes:
    """Single-process training, or data-parallel training through ``accelerate`` when launched with
    several processes (``accelerate launch`` / ``torchrun``: ``WORLD_SIZE`` > 1)."""

    def __init__(self, device: torch.device) -> None:
        self.accelerator = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            try:
                from accelerate import Accelerator
            except ImportError as exc:
                raise RuntimeError(
                    "multi-process training needs accelerate: pip install 'samplm[train]'"
                ) from exc
            self.accelerator = Accelerator(cpu=device.type == "cpu")
            device = self.accelerator.device
        self.device = device
        self.rank = self.accelerator.process_index if self.accelerator else 0
        self.world = self.accelerator.num_processes if self.accelerator else 1
        self.is_main = self.rank == 0

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def no_sync(self, model: nn.Module, last_micro_step: bool):
        if self.accelerator is None or last_micro_step:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.accelerator is None:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], device=self.device)
        reduced = self.accelerator.reduce(tensor, reduction="mean")
        return {k: float(v) for k, v in zip(keys, reduced.tolist(), strict=True)}

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()


def _step_rng(seed: int, step: int, rank: int, micro: int = 0) -> np.random.Generator:
    """The random stream of one (step, process, micro-step): a resumed run makes the same draws as an
    uninterrupted one without storing generator states."""
    return np.random.default_rng([seed, step, rank, micro])


@dataclass
class _Run:
    """The moving parts of one training run (built by :func:`_setup`)."""

    sam: Sam
    train_set: TrainingSet
    val_set: TrainingSet | None
    out: Path
    config: TrainConfig
    procs: _Processes
    adapter: PromptAdapter
    sampler: PromptSampler
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Any
    state: dict[str, Any] = field(
        default_factory=lambda: {"step": 0, "best": -math.inf, "best_metrics": {}, **STATE_DEFAULTS}
    )

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoints" / CHECKPOINT_NAME

    def finished(self) -> bool:
        """All steps done, or stopped early (no better validation in ``patience`` validations)."""
        return self.state["step"] >= self.config.steps or bool(self.state["stopped"])


def train(
    sam: Sam,
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
        progress: show a progress bar.
        stop_after: stop (after checkpointing) once this many steps are done in total - for
            splitting a run over several sessions; ``None`` runs to ``config.steps``.

    Raises:
        RunLockedError: another run holds ``out_dir`` (the main process locks ``out_dir/.lock``).
        CheckpointError: the checkpoint to resume from is truncated, corrupted or not a checkpoint.
        ResumeMismatchError: resuming with optimisation settings other than the checkpoint's.
        NonFiniteError: a NaN or infinite loss (naming the batch's images) or adapter weight.
    """
    config = config or TrainConfig()
    run = _setup(sam, train_set, val_set, Path(out_dir), config, adapter_config, model_type, device)
    last = min(config.steps, stop_after) if stop_after is not None else config.steps
    with contextlib.ExitStack() as lock:
        if run.procs.is_main:  # one run per output directory; released on any exit
            lock.enter_context(lock_directory(run.out))
        _resume(run, resume)
        if val_set is not None and run.state["judgement"] is None:
            _judge_baselines(run)
        _train_steps(run, last, progress)
        if run.procs.is_main and run.finished():
            _finish(run, progress)
        run.procs.wait()
        adapter_dir = run.out / ADAPTER_DIRNAME
        best = PromptAdapter.load(adapter_dir) if adapter_dir.is_dir() else run.adapter
    metrics, steps = dict(run.state["best_metrics"]), run.state["step"]
    return TrainResult(best, adapter_dir, metrics, steps, run.adapter, run.state["judgement"])


def _judge_baselines(run: _Run) -> None:
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
        _record_judgement(run, judgement)
        if judgement.selected in candidates:
            _export(candidates[judgement.selected], run.out, run.state["best_metrics"])
        with (run.out / METRICS_NAME).open("a", encoding="utf-8") as log:
            _log(log, None, {"step": 0, "val_miou_sam": judgement.sam, "val_miou_samf": judgement.samf})
    run.procs.wait()


def _record_judgement(run: _Run, judgement: Judgement) -> None:
    """Keep ``judgement`` in the loop state with the exported candidate's figure and metrics (``step``:
    the trained adapter's validation step, 0 for plain SAM and SAM-F)."""
    step = judgement.trained_step if judgement.selected == "trained" else 0
    run.state["judgement"] = judgement
    run.state["best"] = judgement.best
    run.state["best_metrics"] = {**judgement.metrics(), "step": step}


def _finish(run: _Run, progress: bool) -> None:
    """The last export: without validation the final adapter; with it, the selected candidate's card
    and metrics get the final figures (and the judgement line is printed). Then the prototype."""
    adapter_dir = run.out / ADAPTER_DIRNAME
    judgement = run.state["judgement"]
    if run.val_set is None:
        run.state["best_metrics"] = {"step": run.state["step"]}
        _export(run.adapter, run.out, run.state["best_metrics"])
    elif judgement is not None and adapter_dir.is_dir():
        _export(PromptAdapter.load(adapter_dir), run.out, run.state["best_metrics"], judgement.line())
        if progress:
            print(judgement.line(), flush=True)
    if adapter_dir.is_dir():
        training_prototype(run.train_set, run.adapter.task).save(adapter_dir)


def _resume(run: _Run, resume: bool) -> None:
    """Continue from the checkpoint if ``resume`` and one exists (same optimisation settings only; without
    ``resume`` an existing checkpoint is deleted), then record the settings and keep the ``metrics.jsonl``
    lines up to the step the run starts from."""
    if resume and run.checkpoint.is_file():
        _load_checkpoint(run)
    elif not resume and run.procs.is_main:  # a fresh run: an older checkpoint must never be resumed later
        for stale in (run.checkpoint, checksum_path(run.checkpoint)):
            stale.unlink(missing_ok=True)
    if run.procs.is_main:
        atomic_write_text(run.out / CONFIG_NAME, run.config.to_json())
        _trim_metrics(run.out / METRICS_NAME, run.state["step"])


def _train_steps(run: _Run, last: int, progress: bool) -> None:
    """Steps up to ``last``, with logging, validation and checkpoints (the main process writes)."""
    config, main = run.config, run.procs.is_main
    with contextlib.ExitStack() as stack:
        log = stack.enter_context((run.out / METRICS_NAME).open("a", encoding="utf-8")) if main else None
        board = _tensorboard(run.out) if main else None
        if board is not None:
            stack.callback(board.close)
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
            totals = _step(run)
            step = run.state["step"]
            bar.update(1)
            bar.set_postfix(loss=f"{totals['loss']:.4f}", iou=f"{totals['iou']:.3f}")
            if main and (step % config.log_every == 0 or step == last):
                _log(log, board, _step_record(run, totals, time.perf_counter() - started))
            if run.val_set is not None and (step % config.val_every == 0 or step == config.steps):
                _validate(run, log, board, bar)
            if main and (step % config.checkpoint_every == 0 or step == last or run.state["stopped"]):
                _save_checkpoint(run)


def _step_record(run: _Run, totals: dict[str, float], seconds: float) -> dict[str, Any]:
    """The ``metrics.jsonl`` line of the step just done."""
    record = {"step": run.state["step"], "lr": run.scheduler.get_last_lr()[0], "time": seconds}
    return record | {k: round(v, 6) for k, v in totals.items()}


def _setup(sam, train_set, val_set, out, config, adapter_config, model_type, device) -> _Run:
    """Freeze SAM, build the adapter, the optimiser and scheduler, and wrap them for the processes."""
    procs = _Processes(torch.device(device))
    freeze(sam).to(procs.device)
    torch.manual_seed(config.seed)  # the same adapter initialisation (PMM) on every process
    adapter = _new_adapter(adapter_config, config)
    adapter.bind_base_model(sam, model_type=model_type)
    adapter.to(procs.device).train()
    adapter.plm.mask_mix.requires_grad_(config.learn_mask_mix)
    sampler = PromptSampler(
        config.center_power, config.box_probability, config.box_jitter, config.extra_points
    )
    adapter.config.prompt_types = sampler.prompt_types
    optimizer = torch.optim.AdamW(
        [p for p in adapter.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    model, optimizer = procs.prepare(StepModel(adapter, sam, config), optimizer)
    use_scaler = config.precision == "fp16" and procs.device.type == "cuda"
    scaler = torch.amp.GradScaler(procs.device.type) if use_scaler else None
    return _Run(
        sam, train_set, val_set, out, config, procs, adapter, sampler, model, optimizer, scheduler, scaler
    )


def _step(run: _Run) -> dict[str, float]:
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


def _micro_batch(run: _Run, step: int, micro: int) -> list[PromptGroup]:
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


def _validate(run: _Run, log, board, bar) -> None:
    """Centre-click validation on the main process: a candidate better than every other so far is
    exported; ``patience`` validations without a better trained adapter stop the run (every process)."""
    step, patience = run.state["step"], run.config.patience
    stop = 0.0
    if run.procs.is_main:
        miou = evaluate_center_miou(run.sam, run.adapter, run.val_set, run.config.val_max_instances)
        _log(log, board, {"step": step, "val_miou": round(miou, 6)})
        bar.write(f"step {step}: val mIoU (centre click, low-res) {miou:.4f}")
        judgement = run.state["judgement"]
        run.state["stale"] = 0 if miou > judgement.trained else run.state["stale"] + 1
        selected = judgement.consider(miou, step)
        _record_judgement(run, judgement)
        if selected:
            _export(run.adapter, run.out, run.state["best_metrics"])
        stop = float(bool(patience) and run.state["stale"] >= patience)
    run.state["stopped"] = run.procs.mean({"stop": stop})["stop"] > 0
    if run.state["stopped"] and run.procs.is_main:
        bar.write(f"step {step}: no better validation in {patience} validations; stopping early")


def _tensorboard(out: Path):
    """A TensorBoard writer under ``out/tensorboard`` if TensorBoard is installed, else ``None``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _log(log, board, record: dict[str, Any]) -> None:
    log.write(json.dumps(record) + "\n")
    log.flush()
    if board is not None:
        for key, value in record.items():
            if key != "step":
                board.add_scalar(key, value, record["step"])


def _new_adapter(adapter_config: AdapterConfig | None, config: TrainConfig) -> PromptAdapter:
    base = adapter_config or AdapterConfig()
    pmm = (base.pmm or PMMConfig(num_points=config.pmm_points)) if config.use_pmm else None
    return PromptAdapter(AdapterConfig(**{**base.__dict__, "pmm": pmm, "metadata": dict(base.metadata)}))


@torch.no_grad()
def evaluate_center_miou(
    sam: Sam, adapter: PromptAdapter, data: TrainingSet, max_instances: int | None = None
) -> float:
    """Mean IoU at low resolution with one click at each mask's centre, top-confidence mask."""
    was_training = adapter.training
    adapter.eval()
    device = next(adapter.parameters()).device
    ious = []
    for item in data.items[: max_instances or None]:
        output = decode_center_click(
            sam, data.embedding(item).to(device), item.target.low_res, plm=adapter.plm
        )
        logits = output.low_res_logits[0, output.iou_predictions.argmax(dim=1)]
        target = torch.as_tensor(item.target.low_res, device=device)[None].float()
        ious.append(float(mask_iou(logits.float(), target)))
    adapter.train(was_training)
    return float(np.mean(ious)) if ious else 0.0


def _export(adapter: PromptAdapter, out: Path, metrics: dict[str, Any], selection: str | None = None) -> None:
    """Save ``adapter`` to ``out/adapter`` with ``metrics`` (and their ``step``) in its config, and
    ``selection`` (how it was chosen, one line) in its config and card.

    Raises:
        NonFiniteError: a weight is NaN or infinite; nothing is written.
    """
    bad = [
        name
        for name, tensor in adapter.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise NonFiniteError(
            f"step {metrics.get('step')}: NaN or infinite values in the adapter ({', '.join(bad)}); "
            f"not exporting it to {out / ADAPTER_DIRNAME}"
        )
    adapter.config.metadata = {**adapter.config.metadata, "metrics": dict(metrics)}
    if selection is not None:
        adapter.config.metadata["selection"] = selection
    adapter.save_pretrained(out / ADAPTER_DIRNAME)


def _save_checkpoint(run: _Run) -> None:
    """Write ``checkpoints/last.pt`` (training state and settings) and its SHA-256 in ``last.pt.sha256``.

    The new digest joins the accepted ones before the checkpoint is renamed into place and the old ones
    are dropped after it, so a crash at any point leaves a checkpoint that its checksum file accepts.
    """
    payload = {
        "adapter": run.adapter.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "state": _checkpoint_state(run.state),
        "config": run.config.to_json(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = run.checkpoint
    write_checksums(path, [digest, *(read_checksums(path) or [])])
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    write_checksums(path, [digest])


def _checkpoint_state(state: dict[str, Any]) -> dict[str, Any]:
    """The loop state as plain values for a checkpoint (the judgement as a dict)."""
    saved = {key: state[key] for key in STATE_KEYS}
    if saved["judgement"] is not None:
        saved["judgement"] = saved["judgement"].to_state()
    return saved


def _loop_state(saved: dict[str, Any]) -> dict[str, Any]:
    """The loop state of a checkpoint (:func:`_checkpoint_state`); keys it lacks take their defaults."""
    state = {key: saved[key] if key in saved else STATE_DEFAULTS[key] for key in STATE_KEYS}
    if state["judgement"] is not None:
        state["judgement"] = Judgement.from_state(state["judgement"])
    return state


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's payload, its bytes checked against ``last.pt.sha256`` and loaded with
    ``torch.load(..., weights_only=True)``.

    A checkpoint without a checksum file is accepted only from samplm 0.1.0 (no settings inside it), with a
    warning.

    Raises:
        CheckpointError: truncated, corrupted, not a checkpoint, or missing its checksum file.
    """
    data = path.read_bytes()
    recorded = read_checksums(path)
    if recorded is not None and hashlib.sha256(data).hexdigest() not in recorded:
        raise CheckpointError(
            path, f"its SHA-256 does not match {checksum_path(path).name} (truncated or corrupted)"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bytes that are not a checkpoint
        raise CheckpointError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(path, "not a samplm training checkpoint")
    if recorded is None:
        if "config" in payload:
            raise CheckpointError(path, f"no checksum file {checksum_path(path).name} beside it")
        warnings.warn(
            f"{path}: no checksum (a checkpoint of samplm 0.1.0); resuming without verifying it",
            UserWarning,
            stacklevel=5,  # the caller of train()
        )
    return payload


def _load_checkpoint(run: _Run) -> None:
    """Restore adapter, optimiser, scheduler and loop state (step, best metric) from ``run.checkpoint``.

    Raises:
        CheckpointError: see :func:`_read_checkpoint`; also a checkpoint that does not fit this run.
        ResumeMismatchError: the run's optimisation settings differ from the checkpoint's.
    """
    path = run.checkpoint
    payload = _read_checkpoint(path)
    stored = payload.get("config")
    _check_resumable(run, json.loads(stored) if stored else _read_json(run.out / CONFIG_NAME))
    try:
        run.adapter.load_state_dict(payload["adapter"])
        run.optimizer.load_state_dict(payload["optimizer"])
        run.scheduler.load_state_dict(payload["scheduler"])
        run.state = _loop_state(payload["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"does not hold this run's training state ({exc})") from exc


def _check_resumable(run: _Run, stored: dict[str, Any] | None) -> None:
    """Refuse to resume when a setting outside :data:`RESUMABLE_CHANGES` differs from ``stored`` (the
    settings the checkpoint was made with; a setting it lacks counts as its default; ``None``: unknown).

    Raises:
        ResumeMismatchError: listing each changed setting, old and new value.
    """
    if stored is None:
        return
    defaults = TrainConfig().to_dict()
    changes = {
        name: (stored.get(name, defaults[name]), value)
        for name, value in run.config.to_dict().items()
        if name not in RESUMABLE_CHANGES and stored.get(name, defaults[name]) != value
    }
    if changes:
        raise ResumeMismatchError(run.out, changes)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or ``None`` when it is missing or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the ``metrics.jsonl`` lines of steps up to ``step``, where the run starts: a resumed run drops
    the lines of the steps it redoes (and a line cut short by a crash), a run from step 0 starts afresh
    (its candidates are judged again at step 0)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines() if step > 0 else []
    kept = [line for line in lines if _line_step(line) <= step]
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _line_step(line: str) -> float:
    """The ``step`` of a ``metrics.jsonl`` line (infinite for a line that is not a record)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf
