"""Named training recipes: the paper's schedule for real SAM, a fast one for samplm's small bases.

``samplm train`` picks one with ``--recipe`` (default ``auto``: ``paper`` for ``vit_*``, ``fast`` for
``samplm_lite``/``samplm_tiny``); explicit flags (``--steps``, ``--lr``, ...) and config-file settings
override the recipe's values. The recipe that ran is printed and recorded in the training config.
"""

from __future__ import annotations

from typing import Any

from ..base.loading import SMALL_MODEL_TYPES
from .settings import TrainConfig

RECIPES: dict[str, dict[str, Any]] = {
    # Section 5.1 of the paper: 20k steps of 10 instances, AdamW 1e-5, warm-up 250, decay x0.1 twice.
    "paper": {},
    # Small data on CPU in minutes: a large learning rate over few steps, and all three of SAM's masks
    # trained towards the target. lr 1e-3: on real plate photos with samplm_lite it scored 37.05 mIoU
    # against 34.27 at 3e-3 when it was chosen (banners: 75.48 against 77.68); see docs/training.md.
    "fast": {
        "steps": 600,
        "batch_size": 8,
        "lr": 1e-3,
        "warmup_steps": 60,
        "multimask": "all",
        "val_every": 150,
        "checkpoint_every": 150,
    },
}
RECIPE_CHOICES = ("auto", *RECIPES)
#: ``fast`` on a small set (see :func:`sized_settings`): about this many passes over the training
#: instances, at least ``MIN_STEPS`` steps, about ``VALIDATIONS`` validations, ``PATIENCE`` of them
#: without a better adapter end the run.
EPOCHS = 30
MIN_STEPS = 150
VALIDATIONS = 20
PATIENCE = 6
# In ``fast``, these follow the number of steps (share of the steps) unless set explicitly.
FAST_SCALED = {"warmup_steps": 0.1, "val_every": 0.25, "checkpoint_every": 0.25}


def default_recipe(model_type: str | None) -> str:
    """``fast`` for samplm's own small bases, ``paper`` for real SAM (and unknown bases)."""
    return "fast" if model_type in SMALL_MODEL_TYPES else "paper"


def sized_settings(recipe: str, instances: int, batch_size: int, steps: int | None = None) -> dict[str, int]:
    """The settings ``recipe`` scales to the number of training instances (``fast`` only; ``paper``
    keeps its schedule): steps for about :data:`EPOCHS` passes (between :data:`MIN_STEPS` and the
    recipe's 600), a validation every 1/:data:`VALIDATIONS` of them (at least every 5 steps) and early
    stopping after :data:`PATIENCE` validations without a better adapter. ``steps`` given (a setting
    of the user's) is kept and the rest follows it."""
    if recipe != "fast" or instances < 1:
        return {}
    if steps is None:
        steps = min(RECIPES["fast"]["steps"], max(MIN_STEPS, round(EPOCHS * instances / batch_size)))
    every = max(5, round(steps / VALIDATIONS))
    return {
        "steps": steps,
        "val_every": every,
        "checkpoint_every": every,
        "warmup_steps": max(1, round(FAST_SCALED["warmup_steps"] * steps)),
        "patience": PATIENCE,
    }


def recipe_config(
    recipe: str, model_type: str | None = None, *, instances: int | None = None, **overrides: Any
) -> tuple[str, TrainConfig]:
    """``(resolved recipe name, TrainConfig)``: the recipe's settings, scaled to ``instances`` training
    instances when given (:func:`sized_settings`), updated by ``overrides``.

    Raises:
        ValueError: ``recipe`` is not one of :data:`RECIPE_CHOICES`, or an override is not a setting.
    """
    if recipe not in RECIPE_CHOICES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPE_CHOICES)}")
    name = default_recipe(model_type) if recipe == "auto" else recipe
    settings = {**RECIPES[name], **overrides}
    if instances is not None:
        batch = settings.get("batch_size", TrainConfig.batch_size)
        sized = sized_settings(name, instances, batch, overrides.get("steps"))
        settings.update({k: v for k, v in sized.items() if k not in overrides})
        settings["extra"] = {**settings.get("extra", {}), "sized_for_instances": instances}
    elif name == "fast":
        for key, share in FAST_SCALED.items():
            if key not in overrides:
                settings[key] = max(1, round(share * settings["steps"]))
    settings["extra"] = {**settings.get("extra", {}), "recipe": name}
    return name, TrainConfig.from_dict(settings)
