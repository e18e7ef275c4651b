"""The training loop: PLM (+ PMM) on a frozen SAM, from cached embeddings.

A run is a few named steps: :func:`_setup` (adapter, optimiser, processes), :func:`_resume` (from the
last checkpoint), then per optimiser step :func:`_step` (batches from :mod:`samplm.train.batch` through
:class:`StepModel`), :func:`_validate` (centre-click mIoU, best adapter exported) and checkpointing, and
a final export. Random draws come from a stream seeded by (seed, step, process), and checkpoints hold the
adapter, optimiser and scheduler states, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._io import atomic_write, atomic_write_text
from ..adapter import PromptAdapter
from ..center_click import decode_center_click
from ..config import AdapterConfig, PMMConfig
from ..decode import decode_prompts
from ..losses import mask_iou
from ..modeling import sample_point_features
from ..trainset import TrainingSet
from .batch import PromptGroup, build_batch
from .config import TrainConfig
from .losses import point_matching_loss, segmentation_loss
from .sampling import PromptSampler

CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.jsonl"
ADAPTER_DIRNAME = "adapter"


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        adapter: the exported (best by validation mIoU, else final) adapter, read back from disk.
        adapter_dir: where it was exported.
        metrics: its metrics (``val_miou``, ``step``).
        steps: optimiser steps done.
        last: the adapter as it is after the last step (in memory, on this process).
    """

    adapter: PromptAdapter
    adapter_dir: Path
    metrics: dict[str, float]
    steps: int
    last: PromptAdapter


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
    state: dict[str, Any] = field(default_factory=lambda: {"step": 0, "best": -math.inf, "best_metrics": {}})

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoints" / CHECKPOINT_NAME


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
        out_dir: receives ``adapter/``, ``checkpoints/last.pt``, ``metrics.jsonl``, ``train_config.json``
            (and ``tensorboard/`` when TensorBoard is installed).
        config: training settings (paper defaults).
        adapter_config: task name, PLM settings, metadata; a PMM section is added when ``use_pmm``.
        model_type: recorded in the adapter config.
        device: where to train (under a multi-process launch, each process's own device).
        resume: continue from ``out_dir/checkpoints/last.pt`` if present.
        progress: show a progress bar.
        stop_after: stop (after checkpointing) once this many steps are done in total - for
            splitting a run over several sessions; ``None`` runs to ``config.steps``.
    """
    config = config or TrainConfig()
    run = _setup(sam, train_set, val_set, Path(out_dir), config, adapter_config, model_type, device)
    if resume and run.checkpoint.is_file():
        run.state = _load_checkpoint(run.checkpoint, run.adapter, run.optimizer, run.scheduler)
    main = run.procs.is_main
    if main:
        run.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.out / "train_config.json", config.to_json())
    last = min(config.steps, stop_after) if stop_after is not None else config.steps
    with contextlib.ExitStack() as stack:
        log = stack.enter_context((run.out / METRICS_NAME).open("a", encoding="utf-8")) if main else None
        board = _tensorboard(run.out) if main else None
        if board is not None:
            stack.callback(board.close)
        bar = stack.enter_context(
            tqdm(
                total=config.steps,
                initial=run.state["step"],
                desc="training",
                unit="step",
                disable=not (progress and main),
            )
        )
        while run.state["step"] < last:
            started = time.perf_counter()
            totals = _step(run)
            step = run.state["step"]
            bar.update(1)
            bar.set_postfix(loss=f"{totals['loss']:.4f}", iou=f"{totals['iou']:.3f}")
            if main and (step % config.log_every == 0 or step == last):
                _log(log, board, _step_record(run, totals, time.perf_counter() - started))
            if val_set is not None and (step % config.val_every == 0 or step == config.steps):
                _validate(run, log, board, bar)
            if main and (step % config.checkpoint_every == 0 or step == last):
                _save_checkpoint(run.checkpoint, run.adapter, run.optimizer, run.scheduler, run.state)
    if main and val_set is None and run.state["step"] >= config.steps:
        run.state["best_metrics"] = {"step": run.state["step"]}
        _export(run.adapter, run.out, run.state["best_metrics"])
    run.procs.wait()
    adapter_dir = run.out / ADAPTER_DIRNAME
    best = PromptAdapter.load(adapter_dir) if adapter_dir.is_dir() else run.adapter
    return TrainResult(best, adapter_dir, dict(run.state["best_metrics"]), run.state["step"], run.adapter)


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
    """One optimiser step (``grad_accum`` micro-batches); returns the step's mean losses."""
    config, procs, data = run.config, run.procs, run.train_set
    step = run.state["step"] + 1
    run.optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = defaultdict(float)
    for micro in range(config.grad_accum):
        rng = _step_rng(config.seed, step, procs.rank, micro)
        torch.manual_seed(int(rng.integers(2**62)))  # dropout in the PMM
        picks = rng.choice(len(data), size=min(config.batch_size, len(data)), replace=False)
        batch = build_batch(
            data,
            [data.items[i] for i in picks],
            rng,
            run.sampler,
            device=procs.device,
            pmm_jitter=config.pmm_jitter if run.adapter.pmm is not None else None,
        )
        with procs.no_sync(run.model, micro == config.grad_accum - 1):
            losses = run.model(batch, data.cell)
            scaled = losses["loss"] / config.grad_accum
            (run.scaler.scale(scaled) if run.scaler else scaled).backward()
        for key, value in losses.items():
            totals[key] += float(value.detach()) / config.grad_accum
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.state["step"] = step
    return procs.mean(dict(totals))


def _validate(run: _Run, log, board, bar) -> None:
    """Centre-click validation on the main process; a new best is exported."""
    step = run.state["step"]
    if run.procs.is_main:
        miou = evaluate_center_miou(run.sam, run.adapter, run.val_set, run.config.val_max_instances)
        _log(log, board, {"step": step, "val_miou": round(miou, 6)})
        bar.write(f"step {step}: val mIoU (centre click, low-res) {miou:.4f}")
        if miou > run.state["best"]:
            run.state["best"], run.state["best_metrics"] = miou, {"val_miou": round(miou, 6), "step": step}
            _export(run.adapter, run.out, run.state["best_metrics"])
    run.procs.wait()


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


def _export(adapter: PromptAdapter, out: Path, metrics: dict[str, Any]) -> None:
    adapter.config.metadata = {**adapter.config.metadata, "metrics": dict(metrics)}
    adapter.save_pretrained(out / ADAPTER_DIRNAME)


def _save_checkpoint(path: Path, adapter, optimizer, scheduler, state: dict) -> None:
    payload = {
        "adapter": adapter.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": {"step": state["step"], "best": state["best"], "best_metrics": state["best_metrics"]},
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(path: Path, adapter, optimizer, scheduler) -> dict[str, Any]:
    """Restore adapter, optimiser and scheduler; returns the loop state (step, best metric)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    adapter.load_state_dict(payload["adapter"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return dict(payload["state"])
