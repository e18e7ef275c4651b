"""``TrainConfig``: every training setting, with the paper's values as defaults (Section 5.1)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

MULTIMASK_MODES = ("min", "all", "single")
PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Training settings.

    Optimisation (paper defaults): AdamW ``lr`` 1e-5, ``weight_decay`` 0.01, ``steps`` 20,000 of
    ``batch_size`` 10 instances, linear warm-up over ``warmup_steps`` 250, learning rate x ``decay_gamma``
    (0.1) at ``decay_at`` = 66.667% and 86.666% of the steps.

    Loss: ``focal_weight`` : ``dice_weight`` = 20 : 1, plus ``iou_weight`` x MSE of SAM's IoU head, plus
    ``pm_weight`` (lambda = 1) x the point matching loss when ``use_pmm``. ``multimask``: ``"min"``
    trains the best of SAM's three masks (SAM's recipe), ``"all"`` trains all three towards the target
    (the prompt becomes unambiguous, so whichever mask the IoU head ranks first is the target),
    ``"single"`` SAM's single-mask output.

    Prompts: a click sampled with probability ~ distance_transform ** ``center_power``; with
    ``box_probability`` a jittered box (``box_jitter`` x side); up to ``extra_points`` more clicks.

    PMM: ``pmm_points`` contour points, jittered by ``pmm_jitter`` feature cells (std).
    """

    steps: int = 20_000
    batch_size: int = 10
    grad_accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 250
    decay_at: tuple[float, ...] = (0.66667, 0.86666)
    decay_gamma: float = 0.1
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    pm_weight: float = 1.0
    multimask: str = "min"
    use_pmm: bool = True
    pmm_points: int = 20
    pmm_jitter: float = 0.5
    center_power: float = 1.0
    box_probability: float = 0.0
    box_jitter: float = 0.1
    extra_points: int = 0
    precision: str = "no"
    seed: int = 0
    val_every: int = 500
    val_max_instances: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.decay_at = tuple(float(v) for v in self.decay_at)
        checks = {
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "lr": self.lr > 0,
            "warmup_steps": self.warmup_steps >= 0,
            "decay_at": all(0 < v < 1 for v in self.decay_at),
            "pmm_points": self.pmm_points >= 3,
            "box_probability": 0 <= self.box_probability <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"invalid training setting(s): {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}"
            )
        if self.multimask not in MULTIMASK_MODES:
            raise ValueError(f"multimask must be one of {MULTIMASK_MODES}, got {self.multimask!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown training setting(s): {unknown}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["decay_at"] = list(self.decay_at)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at optimiser step ``step`` (0-based): warm-up, then step decay."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        passed = sum(step >= round(f * self.steps) for f in self.decay_at)
        return warm * self.decay_gamma**passed
