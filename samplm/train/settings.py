"""``TrainConfig``: every training setting, with the paper's values as defaults (Section 5.1)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..adapter.config import MAX_POINTS
from ..errors import ConfigError
from ..utils.checks import Limit, check_limits, shown
from ..utils.settings import about, field_choices, field_limits

MULTIMASK_MODES = ("min", "all", "single")
PRECISIONS = ("no", "bf16", "fp16")
SEED_LIMIT = Limit(int, 0, 2**32 - 1)

_COUNT = Limit(int, 1)
_WEIGHT = Limit(float, 0)
_POSITIVE = Limit(float, 0, low_open=True)


def _setting(default: Any, help: str | None = None, **metadata: Any) -> Any:
    """A training setting: ``default`` (the paper's), the help text of its flag (``None``: its default is
    shown), its ``limit`` or ``choices``."""
    return field(default=default, metadata=about(help, **metadata))


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

    ``learn_mask_mix``: train the PLM's 3 x 3 mask mix with the rest (else it stays the identity).

    Judgement (with a validation set): plain SAM and SAM-F are validated before the first step, the
    adapter every ``val_every`` steps (at most ``val_max_instances``); the best candidate is exported.
    ``patience`` > 0 stops the run after that many validations without a better trained adapter. After
    the last step a score readout and mask bias are fitted for the winner when the training split holds at
    least ``readout_min_instances`` instances (on fewer they would follow those photos, not the task).
    """

    steps: int = _setting(20_000, "optimiser steps (default: the recipe's)", limit=_COUNT)
    batch_size: int = _setting(10, "instances per step (default: the recipe's)", limit=_COUNT)
    grad_accum: int = _setting(1, limit=_COUNT)
    lr: float = _setting(1e-5, "AdamW learning rate (default: the recipe's)", limit=_POSITIVE)
    weight_decay: float = _setting(0.01, limit=_WEIGHT)
    warmup_steps: int = _setting(250, limit=Limit(int, 0))
    decay_at: tuple[float, ...] = _setting(
        (0.66667, 0.86666), limit=Limit(float, 0, 1, low_open=True, high_open=True)
    )
    decay_gamma: float = _setting(0.1, limit=_POSITIVE)
    focal_weight: float = _setting(20.0, limit=_WEIGHT)
    dice_weight: float = _setting(1.0, limit=_WEIGHT)
    iou_weight: float = _setting(1.0, limit=_WEIGHT)
    pm_weight: float = _setting(1.0, limit=_WEIGHT)
    multimask: str = _setting(
        "min",
        "which of SAM's masks the adapter trains (default: the recipe's; see docs/training.md)",
        choices=MULTIMASK_MODES,
    )
    use_pmm: bool = _setting(True)
    learn_mask_mix: bool = _setting(
        True, "train the 3 x 3 blend of SAM's three masks with the PLM (default: the recipe's)"
    )
    pmm_points: int = _setting(20, limit=Limit(int, 3, MAX_POINTS))
    pmm_jitter: float = _setting(0.5, limit=_WEIGHT)
    center_power: float = _setting(1.0, limit=_WEIGHT)
    box_probability: float = _setting(0.0, limit=Limit(float, 0, 1))
    box_jitter: float = _setting(0.1, limit=_WEIGHT)
    extra_points: int = _setting(0, limit=Limit(int, 0, MAX_POINTS))
    precision: str = _setting("no", "autocast precision (default no)", choices=PRECISIONS)
    seed: int = _setting(0, "seed for the split, prompts and initialisation (default 0)", limit=SEED_LIMIT)
    val_every: int = _setting(500, limit=_COUNT)
    val_max_instances: int = _setting(500, limit=_COUNT)
    patience: int = _setting(
        0,
        "stop after this many validations without a better trained adapter (0: never; default: the recipe's)",
        limit=Limit(int, 0),
    )
    readout_min_instances: int = _setting(
        8,
        "fit the score readout and mask bias only on at least this many training instances (default 8)",
        limit=_COUNT,
    )
    checkpoint_every: int = _setting(500, limit=_COUNT)
    log_every: int = _setting(10, limit=_COUNT)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Type and range of every setting (:data:`SETTING_LIMITS`, :data:`CHOICES`); ints given for
        float settings become floats. Raises :class:`~samplm.errors.ConfigError` naming the setting."""
        if isinstance(self.decay_at, str) or not isinstance(self.decay_at, list | tuple):
            raise ConfigError("decay_at", f"must be a list of numbers in (0, 1), got {shown(self.decay_at)}")
        self.decay_at = tuple(SETTING_LIMITS["decay_at"].check("decay_at", v) for v in self.decay_at)
        check_limits(self, "", {k: v for k, v in SETTING_LIMITS.items() if k != "decay_at"})
        for switch in ("use_pmm", "learn_mask_mix"):
            if not isinstance(getattr(self, switch), bool):
                raise ConfigError(switch, f"must be true or false, got {shown(getattr(self, switch))}")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(name, f"must be one of {choices}, got {shown(getattr(self, name))}")
        if not isinstance(self.extra, dict):
            raise ConfigError("extra", f"must be a mapping, got {shown(self.extra)}")

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


#: Type and range of every numeric setting (``decay_at``: of each of its values), from the fields'
#: metadata. ``samplm`` checks flags and config-file values with them before it reads any data.
SETTING_LIMITS: dict[str, Limit] = field_limits(TrainConfig)
#: The allowed values of the settings that have a few.
CHOICES = field_choices(TrainConfig)
