"""SAM-F baseline (PerSAM-F's scale-aware fine-tuning, as in the paper's Tables 2-3).

Two learnable weights blend SAM's three multimask logits: ``M = w1*M1 + w2*M2 + (1 - w1 - w2)*M3``
(:func:`blend_outputs`, the one place the blend is computed: fitting, evaluation, click-free masks).
SAM itself is untouched; the weights are fit on the training split with dice + focal loss on SAM's
outputs for the centre click of each training instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..prompts.center_click import decode_center_click
from ..train.losses import dice_loss, sigmoid_focal_loss
from ..train.training_set import TrainingSet
from ..utils.progress import progress_bar
from ..utils.threads import stage_threads, torch_threads


@dataclass(frozen=True)
class SamF:
    """Blend weights ``(w1, w2)``; the third is ``1 - w1 - w2``."""

    w1: float = 1 / 3
    w2: float = 1 / 3

    @property
    def weights(self) -> tuple[float, float, float]:
        return (self.w1, self.w2, 1.0 - self.w1 - self.w2)

    def blend(self, logits: Tensor) -> Tensor:
        """``B x 3 x h x w`` multimask logits -> ``B x 1 x h x w`` blended logits."""
        return blend_outputs(logits, self.weights)

    def blend_scores(self, scores: Tensor) -> Tensor:
        """``B x 3`` scores of the three masks -> ``B x 1``, weighted as the logits are."""
        return blend_outputs(scores, self.weights)


def blend_outputs(outputs: Tensor, weights: Tensor | Sequence[float]) -> Tensor:
    """SAM-F's blend ``w1*M1 + w2*M2 + w3*M3`` of the three multimask outputs along dim 1: ``B x 3 x h x w``
    logits -> ``B x 1 x h x w``, ``B x 3`` scores -> ``B x 1``.

    Args:
        outputs: the decoder's three multimask outputs in dim 1.
        weights: ``(w1, w2, w3)``; numbers are made a tensor of ``outputs``' dtype and device, a tensor is
            used as it is (gradients flow through it when fitting).
    """
    if not isinstance(weights, Tensor):
        weights = torch.tensor(weights, dtype=outputs.dtype, device=outputs.device)
    return (outputs * weights.reshape(1, -1, *(1,) * (outputs.dim() - 2))).sum(dim=1, keepdim=True)


@torch.no_grad()
def _sam_logits(sam: Any, data: TrainingSet, max_instances: int, device) -> tuple[Tensor, Tensor]:
    logits, targets = [], []
    for item in data.items[:max_instances]:
        out = decode_center_click(sam, data.embedding(item).to(device), item.target.low_res)
        logits.append(out.low_res_logits[0].float().cpu())
        targets.append(torch.as_tensor(item.target.low_res[None], dtype=torch.float32))
    return torch.stack(logits), torch.stack(targets)


def train_samf(
    sam: Any,
    data: TrainingSet,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    batch_size: int = 64,
    max_instances: int = 2000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    threads: int | str | None = None,
) -> SamF:
    """Fit SAM-F's two weights on ``data`` (centre clicks), starting from 1/3 each (as PerSAM-F), with
    at most ``threads`` CPU threads (``None`` / ``"auto"``: what torch has; one on an oversubscribed machine,
    :func:`~samplm.utils.threads.stage_threads`)."""
    with torch_threads(stage_threads(threads)):
        logits, targets = _sam_logits(sam, data, max_instances, device)
        return fit_blend(
            logits, targets, steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=progress
        )


def fit_blend(
    logits: Tensor,
    targets: Tensor,
    *,
    steps: int = 300,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> SamF:
    """Fit the two blend weights to targets with dice + focal loss.

    Args:
        logits: ``N x 3 x h x w`` multimask logits.
        targets: ``N x 1 x h x w`` float targets (0/1) on the same grid.

    Returns:
        The fitted :class:`SamF`.
    """
    weights = torch.nn.Parameter(torch.full((2,), 1 / 3))
    optimizer = torch.optim.Adam([weights], lr=lr)
    rng = np.random.default_rng(seed)
    for _ in progress_bar(range(steps), desc="fitting SAM-F", unit="step", disable=not progress):
        picks = torch.as_tensor(rng.choice(len(logits), size=min(batch_size, len(logits)), replace=False))
        w = torch.cat([weights, 1 - weights.sum(0, keepdim=True)])
        blended = blend_outputs(logits[picks], w)[:, 0]
        target = targets[picks][:, 0]
        loss = (dice_loss(blended, target) + sigmoid_focal_loss(blended, target)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    w1, w2 = (float(v) for v in weights.detach())
    return SamF(w1, w2)
