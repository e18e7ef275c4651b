"""The processes a run trains on: one, or several under ``accelerate launch`` / ``torchrun``.

:class:`Processes` is the one place that knows about ``accelerate``: it wraps the model and optimiser
for data-parallel training (DDP), skips the gradient all-reduce on the micro-steps before the last one,
averages logged values over the processes and waits for them. With one process every method is a
pass-through, so single-process training does not need ``accelerate`` installed.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn


class Processes:
    """Single-process training, or data-parallel training through ``accelerate`` when launched with
    several processes (``accelerate launch`` / ``torchrun``: ``WORLD_SIZE`` > 1).

    Attributes:
        accelerator: the ``accelerate.Accelerator``, or ``None`` for one process.
        device: this process's device.
        rank: this process's index (0 for the main process); world: the number of processes.
        is_main: whether this is the process that validates, logs, checkpoints and exports.
    """

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
        """``(model, optimizer)`` wrapped for data-parallel training (unchanged for one process)."""
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def no_sync(self, model: nn.Module, last_micro_step: bool):
        """A context in which backward passes accumulate gradients without all-reducing them: every
        micro-step but the last of a step (a null context for one process and for the last one)."""
        if self.accelerator is None or last_micro_step:
            return contextlib.nullcontext()
        return self.accelerator.no_sync(model)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the processes (one all-reduce of a tensor of ``len(values)``)."""
        if self.accelerator is None:
            return values
        keys = sorted(values)
        tensor = torch.tensor([values[k] for k in keys], device=self.device)
        reduced = self.accelerator.reduce(tensor, reduction="mean")
        return {k: float(v) for k, v in zip(keys, reduced.tolist(), strict=True)}

    def wait(self) -> None:
        """Block until every process gets here."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
