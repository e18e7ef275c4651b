"""The training loop: PLM (+ PMM) on a frozen SAM, from cached embeddings.

Per step: ``batch_size`` instances are drawn (seeded), prompts sampled, and for each image the one
forward path (:func:`samplm.decode.decode_prompts`) runs with gradients flowing through the frozen
decoder into the PLM. Random draws come from a stream seeded by (seed, step, process), and checkpoints
hold the adapter, optimiser and scheduler states, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._io import atomic_write, atomic_write_text
from ..adapter import PromptAdapter
from ..config import AdapterConfig, PMMConfig
from ..decode import decode_prompts
from ..decoder_features import capture_decoder_features
from ..geometry import center_point
from ..modeling import sample_point_features
from .config import TrainConfig
from .losses import mask_iou, point_matching_loss, segmentation_loss
from .sampling import PromptSampler
from .trainset import TrainingItem, TrainingSet

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
    """The trainable adapter behind one ``forward`` that returns a batch's losses.

    Wrapping the loss computation in a module lets ``accelerate``/DDP synchronise gradients; the
    frozen SAM is held outside the module's parameters so it is never broadcast or all-reduced.
    """

    def __init__(self, adapter: PromptAdapter, sam: Sam, sampler: PromptSampler, config: TrainConfig) -> None:
        super().__init__()
        self.adapter = adapter
        object.__setattr__(self, "sam", sam)
        self.sampler = sampler
        self.config = config

    def forward(
        self, data: TrainingSet, items: list[TrainingItem], rng: np.random.Generator
    ) -> dict[str, Tensor]:
        return _batch_losses(self.sam, self.adapter, data, items, rng, self.sampler, self.config)


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


def _step_seed(seed: int, step: int, rank: int, micro: int = 0) -> np.random.Generator:
    """Each (step, process, micro-step) draws from its own seeded stream, so a resumed run makes the
    same draws as an uninterrupted one without storing generator states."""
    return np.random.default_rng([seed, step, rank, micro])


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
    out = Path(out_dir)
    procs = _Processes(torch.device(device))
    device = procs.device
    freeze(sam).to(device)
    torch.manual_seed(config.seed)  # the same adapter initialisation (PMM) on every process
    adapter = _new_adapter(adapter_config, config)
    adapter.bind_base_model(sam, model_type=model_type)
    adapter.to(device).train()
    sampler = PromptSampler(
        config.center_power, config.box_probability, config.box_jitter, config.extra_points
    )
    adapter.config.prompt_types = sampler.prompt_types
    optimizer = torch.optim.AdamW(
        [p for p in adapter.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
    state: dict[str, Any] = {"step": 0, "best": -math.inf, "best_metrics": {}}
    checkpoint = out / "checkpoints" / CHECKPOINT_NAME
    if resume and checkpoint.is_file():
        state = _load_checkpoint(checkpoint, adapter, optimizer, scheduler)
    model, optimizer = procs.prepare(StepModel(adapter, sam, sampler, config), optimizer)
    scaler = (
        torch.amp.GradScaler(device.type) if config.precision == "fp16" and device.type == "cuda" else None
    )
    main = procs.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "train_config.json", config.to_json())
    log = (out / METRICS_NAME).open("a", encoding="utf-8") if main else None
    board = _tensorboard(out) if main else None
    last = min(config.steps, stop_after) if stop_after is not None else config.steps
    bar = tqdm(
        total=config.steps,
        initial=state["step"],
        desc="training",
        unit="step",
        disable=not (progress and main),
    )
    try:
        while state["step"] < last:
            started = time.perf_counter()
            step = state["step"] + 1
            optimizer.zero_grad(set_to_none=True)
            totals: dict[str, float] = defaultdict(float)
            for micro in range(config.grad_accum):
                rng = _step_seed(config.seed, step, procs.rank, micro)
                torch.manual_seed(int(rng.integers(2**62)))  # dropout in the PMM
                picks = rng.choice(len(train_set), size=min(config.batch_size, len(train_set)), replace=False)
                with procs.no_sync(model, micro == config.grad_accum - 1):
                    losses = model(train_set, [train_set.items[i] for i in picks], rng)
                    scaled = losses["loss"] / config.grad_accum
                    (scaler.scale(scaled) if scaler else scaled).backward()
                for key, value in losses.items():
                    totals[key] += float(value.detach()) / config.grad_accum
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            state["step"] = step
            totals = procs.mean(dict(totals))
            bar.update(1)
            bar.set_postfix(loss=f"{totals['loss']:.4f}", iou=f"{totals['iou']:.3f}")
            if main and (step % config.log_every == 0 or step == last):
                record = {
                    "step": step,
                    "lr": scheduler.get_last_lr()[0],
                    "time": time.perf_counter() - started,
                }
                record.update({k: round(v, 6) for k, v in totals.items()})
                _log(log, board, record)
            if val_set is not None and (step % config.val_every == 0 or step == config.steps):
                if main:
                    miou = evaluate_center_miou(sam, adapter, val_set, config.val_max_instances)
                    _log(log, board, {"step": step, "val_miou": round(miou, 6)})
                    bar.write(f"step {step}: val mIoU (centre click, low-res) {miou:.4f}")
                    if miou > state["best"]:
                        state["best"], state["best_metrics"] = (
                            miou,
                            {"val_miou": round(miou, 6), "step": step},
                        )
                        _export(adapter, out, state["best_metrics"])
                procs.wait()
            if main and (step % config.checkpoint_every == 0 or step == last):
                _save_checkpoint(checkpoint, adapter, optimizer, scheduler, state)
    finally:
        bar.close()
        if log is not None:
            log.close()
        if board is not None:
            board.close()
    if main and val_set is None and state["step"] >= config.steps:
        state["best_metrics"] = {"step": state["step"]}
        _export(adapter, out, state["best_metrics"])
    procs.wait()
    adapter_dir = out / ADAPTER_DIRNAME
    best = PromptAdapter.load(adapter_dir) if adapter_dir.is_dir() else adapter
    return TrainResult(best, adapter_dir, dict(state["best_metrics"]), state["step"], adapter)


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


def _batch_losses(
    sam: Sam,
    adapter: PromptAdapter,
    data: TrainingSet,
    items: list[TrainingItem],
    rng: np.random.Generator,
    sampler: PromptSampler,
    config: TrainConfig,
) -> dict[str, torch.Tensor]:
    device = next(adapter.parameters()).device
    groups: dict[tuple, list[tuple[TrainingItem, Any]]] = defaultdict(list)
    for item in items:
        prompt = sampler.sample(item.target, rng, data.img_size)
        shape = (
            str(item.image_path),
            None if prompt.points is None else len(prompt.points),
            prompt.box is not None,
        )
        groups[shape].append((item, prompt))
    seg_total = torch.zeros((), device=device)
    pm_total = torch.zeros((), device=device)
    iou_total = 0.0
    half = torch.bfloat16 if config.precision == "bf16" else torch.float16
    autocast = torch.autocast(device.type, dtype=half, enabled=config.precision != "no")
    for (_, n_points, has_box), members in sorted(groups.items(), key=lambda kv: str(kv[0])):
        embedding = data.embedding(members[0][0]).to(device)
        coords = labels = boxes = None
        if n_points:
            coords = torch.as_tensor(
                np.stack([p.points for _, p in members]), dtype=torch.float32, device=device
            )
            labels = torch.as_tensor(
                np.stack([p.labels for _, p in members]), dtype=torch.int64, device=device
            )
        if has_box:
            boxes = torch.as_tensor(np.stack([p.box for _, p in members]), dtype=torch.float32, device=device)
        targets = torch.as_tensor(np.stack([m.target.low_res for m, _ in members]), device=device)[
            :, None
        ].float()
        with autocast, capture_decoder_features(sam) as features:
            output = decode_prompts(
                sam,
                embedding,
                point_coords=coords,
                point_labels=labels,
                boxes=boxes,
                multimask_output=config.multimask != "single",
                plm=adapter.plm,
            )
        logits = output.low_res_logits.float()
        seg, _, iou = segmentation_loss(
            logits,
            output.iou_predictions.float(),
            targets,
            focal_weight=config.focal_weight,
            dice_weight=config.dice_weight,
            iou_weight=config.iou_weight,
            reduce="all" if config.multimask == "all" else "min",
        )
        seg_total = seg_total + seg.sum()
        iou_total += float(iou.sum())
        if adapter.pmm is not None:
            pm_total = (
                pm_total + _pmm_loss(adapter, data, features, [m for m, _ in members], rng, config).sum()
            )
    n = len(items)
    loss = (seg_total + config.pm_weight * pm_total) / n
    return {
        "loss": loss,
        "seg_loss": seg_total / n,
        "pm_loss": pm_total / n,
        "iou": torch.tensor(iou_total / n),
    }


def _pmm_loss(adapter, data: TrainingSet, features, items: list[TrainingItem], rng, config) -> torch.Tensor:
    """Point matching loss in units of feature cells (input pixels / (img_size / h))."""
    grid = data.low_res // 4
    cell = data.img_size / grid
    fmap = features.as_map(grid, grid).float()  # B x 256 x h x w
    gt = torch.as_tensor(np.stack([m.target.contour for m in items]), dtype=torch.float32, device=fmap.device)
    noise = torch.as_tensor(
        rng.normal(0.0, config.pmm_jitter * cell, gt.shape), dtype=torch.float32, device=fmap.device
    )
    jittered = (gt + noise).clamp(0, data.img_size)
    point_features = sample_point_features(fmap, jittered, data.img_size)
    predicted = jittered + adapter.pmm(point_features)
    return point_matching_loss(gt / cell, predicted / cell)


@torch.no_grad()
def evaluate_center_miou(
    sam: Sam, adapter: PromptAdapter, data: TrainingSet, max_instances: int | None = None
) -> float:
    """Mean IoU at low resolution with one click at each mask's centre, top-confidence mask."""
    was_training = adapter.training
    adapter.eval()
    device = next(adapter.parameters()).device
    scale = data.img_size / data.low_res
    ious = []
    for item in data.items[: max_instances or None]:
        x, y = center_point(item.target.low_res)
        coords = torch.tensor([[[(x + 0.5) * scale, (y + 0.5) * scale]]], device=device)
        output = decode_prompts(
            sam,
            data.embedding(item).to(device),
            point_coords=coords,
            point_labels=torch.ones(1, 1, dtype=torch.int64, device=device),
            plm=adapter.plm,
        )
        best = output.iou_predictions.argmax(dim=1)
        logits = output.low_res_logits[0, best]
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
