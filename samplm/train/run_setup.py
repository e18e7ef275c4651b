"""The moving parts of one training run, and how they are built.

:func:`setup_run` freezes SAM, builds the adapter, the optimiser (AdamW over the adapter's trainable
parameters) and the learning-rate schedule, and wraps them for the processes
(:mod:`samplm.train.distributed`); :class:`TrainingRun` holds them with the loop state that checkpoints
save (:mod:`samplm.train.checkpoints`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapter.config import AdapterConfig, PMMConfig
from ..adapter.prompt_adapter import PromptAdapter
from ..prompts.sampling import PromptSampler
from .checkpoints import CHECKPOINT_NAME, STATE_DEFAULTS
from .distributed import Processes
from .settings import TrainConfig
from .step_model import StepModel, freeze
from .training_set import TrainingSet


def fresh_state() -> dict[str, Any]:
    """The loop state before the first step: ``step`` done, the exported candidate's figure (``best``)
    and metrics, and :data:`~samplm.train.checkpoints.STATE_DEFAULTS`."""
    return {"step": 0, "best": -math.inf, "best_metrics": {}, **STATE_DEFAULTS}


@dataclass
class TrainingRun:
    """The moving parts of one training run (built by :func:`setup_run`).

    ``model`` is the :class:`~samplm.train.step_model.StepModel` around ``adapter`` (DDP-wrapped under
    several processes); ``scaler`` is a ``GradScaler`` for fp16 on CUDA, else ``None``; ``state`` is the
    loop state (:func:`fresh_state`, or a checkpoint's).
    """

    sam: Any
    train_set: TrainingSet
    val_set: TrainingSet | None
    out: Path
    config: TrainConfig
    procs: Processes
    adapter: PromptAdapter
    sampler: PromptSampler
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: Any
    state: dict[str, Any] = field(default_factory=fresh_state)

    @property
    def checkpoint(self) -> Path:
        """``out/checkpoints/last.pt``."""
        return self.out / "checkpoints" / CHECKPOINT_NAME

    def finished(self) -> bool:
        """All steps done, or stopped early (no better validation in ``patience`` validations)."""
        return self.state["step"] >= self.config.steps or bool(self.state["stopped"])


def setup_run(
    sam: Any,
    train_set: TrainingSet,
    val_set: TrainingSet | None,
    out: Path,
    config: TrainConfig,
    adapter_config: AdapterConfig | None,
    model_type: str | None,
    device: str | torch.device,
) -> TrainingRun:
    """Freeze SAM, build the adapter, the optimiser and scheduler, and wrap them for the processes."""
    procs = Processes(torch.device(device))
    freeze(sam).to(procs.device)
    torch.manual_seed(config.seed)  # the same adapter initialisation (PMM) on every process
    adapter = new_adapter(adapter_config, config)
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
    return TrainingRun(
        sam, train_set, val_set, out, config, procs, adapter, sampler, model, optimizer, scheduler, scaler
    )


def new_adapter(adapter_config: AdapterConfig | None, config: TrainConfig) -> PromptAdapter:
    """A fresh adapter from ``adapter_config`` (defaults when ``None``) with a PMM of
    ``config.pmm_points`` points when ``config.use_pmm`` (the config's own PMM section if it has one),
    none otherwise; its metadata is a copy."""
    base = adapter_config or AdapterConfig()
    pmm = (base.pmm or PMMConfig(num_points=config.pmm_points)) if config.use_pmm else None
    return PromptAdapter(AdapterConfig(**{**base.__dict__, "pmm": pmm, "metadata": dict(base.metadata)}))
