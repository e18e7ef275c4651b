"""The training loop: PLM (+ PMM) on a frozen SAM, from cached embeddings.

Per step: ``batch_size`` instances are drawn (seeded), prompts sampled, and for each image the one
forward path (:func:`samplm.decode.decode_prompts`) runs with gradients flowing through the frozen
decoder into the PLM. Checkpoints hold the adapter, optimiser, scheduler and RNG states, so a resumed
run continues exactly where it stopped.
"""

from __future__ import annotations

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
import torch.nn.functional as F
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from .._io import atomic_write, atomic_write_text
from ..adapter import PromptAdapter
from ..config import AdapterConfig, PMMConfig
from ..decode import decode_prompts
from ..geometry import center_point
from .config import TrainConfig
from .features import capture_decoder_features
from .losses import mask_iou, point_matching_loss, segmentation_loss
from .sampling import PromptSampler
from .trainset import TrainingItem, TrainingSet

CHECKPOINT_NAME = "last.pt"
METRICS_NAME = "metrics.jsonl"
ADAPTER_DIRNAME = "adapter"


@dataclass
class TrainResult:
    """What :func:`train` produced: the best (or final) adapter, its directory and metrics."""

    adapter: PromptAdapter
    adapter_dir: Path
    metrics: dict[str, float]
    steps: int


def freeze(sam: Sam) -> Sam:
    """Put SAM in eval mode with no parameter requiring gradients."""
    sam.eval()
    for param in sam.parameters():
        param.requires_grad_(False)
    return sam


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

    Args:
        sam: the SAM (frozen here; its image encoder is not used).
        train_set, val_set: targets + cached embeddings; validation is skipped without ``val_set``.
        out_dir: receives ``adapter/``, ``checkpoints/last.pt``, ``metrics.jsonl``, ``train_config.json``.
        config: training settings (paper defaults).
        adapter_config: task name, PLM settings, metadata; a PMM section is added when ``use_pmm``.
        model_type: recorded in the adapter config.
        device: where to train.
        resume: continue from ``out_dir/checkpoints/last.pt`` if present.
        progress: show a progress bar.
        stop_after: stop (after checkpointing) once this many steps are done in total - for
            splitting a run over several sessions; ``None`` runs to ``config.steps``.
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    freeze(sam).to(device)
    torch.manual_seed(config.seed)  # adapter initialisation (PMM) and dropout are seeded too
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
    state = {"step": 0, "best": -math.inf, "best_metrics": {}}
    rng = np.random.default_rng(config.seed)
    checkpoint = out / "checkpoints" / CHECKPOINT_NAME
    if resume and checkpoint.is_file():
        state, rng = _load_checkpoint(checkpoint, adapter, optimizer, scheduler, config)
    atomic_write_text(out / "train_config.json", config.to_json())
    log = (out / METRICS_NAME).open("a", encoding="utf-8")
    last = min(config.steps, stop_after) if stop_after is not None else config.steps
    bar = tqdm(total=config.steps, initial=state["step"], desc="training", unit="step", disable=not progress)
    try:
        while state["step"] < last:
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            totals: dict[str, float] = defaultdict(float)
            for _ in range(config.grad_accum):
                picks = rng.choice(len(train_set), size=min(config.batch_size, len(train_set)), replace=False)
                losses = _batch_losses(
                    sam, adapter, train_set, [train_set.items[i] for i in picks], rng, sampler, config
                )
                (losses["loss"] / config.grad_accum).backward()
                for key, value in losses.items():
                    totals[key] += float(value.detach()) / config.grad_accum
            optimizer.step()
            scheduler.step()
            state["step"] += 1
            step = state["step"]
            bar.update(1)
            bar.set_postfix(loss=f"{totals['loss']:.4f}", iou=f"{totals['iou']:.3f}")
            if step % config.log_every == 0 or step == last:
                record = {
                    "step": step,
                    "lr": scheduler.get_last_lr()[0],
                    "time": time.perf_counter() - started,
                }
                record.update({k: round(v, 6) for k, v in totals.items()})
                log.write(json.dumps(record) + "\n")
                log.flush()
            if val_set is not None and (step % config.val_every == 0 or step == config.steps):
                miou = evaluate_center_miou(sam, adapter, val_set, config.val_max_instances)
                log.write(json.dumps({"step": step, "val_miou": round(miou, 6)}) + "\n")
                log.flush()
                bar.write(f"step {step}: val mIoU (centre click, low-res) {miou:.4f}")
                if miou > state["best"]:
                    state["best"], state["best_metrics"] = miou, {"val_miou": round(miou, 6), "step": step}
                    _export(adapter, out, state["best_metrics"])
            if step % config.checkpoint_every == 0 or step == last:
                _save_checkpoint(checkpoint, adapter, optimizer, scheduler, state, rng)
    finally:
        bar.close()
        log.close()
    if val_set is None and state["step"] >= config.steps:
        state["best_metrics"] = {"step": state["step"]}
        _export(adapter, out, state["best_metrics"])
    adapter_dir = out / ADAPTER_DIRNAME
    best = PromptAdapter.load(adapter_dir) if adapter_dir.is_dir() else adapter
    return TrainResult(best, adapter_dir, dict(state["best_metrics"]), state["step"])


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
                sam, embedding, point_coords=coords, point_labels=labels, boxes=boxes,
                multimask_output=config.multimask == "min", plm=adapter.plm,
            )  # fmt: skip
        logits = output.low_res_logits.float()
        seg, _, iou = segmentation_loss(
            logits, output.iou_predictions.float(), targets,
            focal_weight=config.focal_weight, dice_weight=config.dice_weight, iou_weight=config.iou_weight,
        )  # fmt: skip
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
    sample_at = (jittered / data.img_size * 2 - 1)[:, :, None, :]  # B x K x 1 x 2, align_corners=False frame
    point_features = F.grid_sample(fmap, sample_at, align_corners=False)[..., 0].transpose(
        1, 2
    )  # B x K x 256
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
            sam, data.embedding(item).to(device), point_coords=coords,
            point_labels=torch.ones(1, 1, dtype=torch.int64, device=device), plm=adapter.plm,
        )  # fmt: skip
        best = output.iou_predictions.argmax(dim=1)
        logits = output.low_res_logits[0, best]
        target = torch.as_tensor(item.target.low_res, device=device)[None].float()
        ious.append(float(mask_iou(logits.float(), target)))
    adapter.train(was_training)
    return float(np.mean(ious)) if ious else 0.0


def _export(adapter: PromptAdapter, out: Path, metrics: dict[str, Any]) -> None:
    adapter.config.metadata = {**adapter.config.metadata, "metrics": dict(metrics)}
    adapter.save_pretrained(out / ADAPTER_DIRNAME)


def _save_checkpoint(
    path: Path, adapter, optimizer, scheduler, state: dict, rng: np.random.Generator
) -> None:
    payload = {
        "adapter": adapter.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": {"step": state["step"], "best": state["best"], "best_metrics": state["best_metrics"]},
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _load_checkpoint(path: Path, adapter, optimizer, scheduler, config: TrainConfig):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    adapter.load_state_dict(payload["adapter"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    rng = np.random.default_rng(config.seed)
    rng.bit_generator.state = json.loads(payload["numpy_rng"])
    torch.set_rng_state(payload["torch_rng"])
    return dict(payload["state"]), rng
