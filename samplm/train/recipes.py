"""Named training recipes: the paper's schedule for real SAM, a fast one for samplm's small bases.

``samplm train`` picks one with ``--recipe`` (default ``auto``: ``paper`` for ``vit_*``, ``fast`` for
``samplm_lite``/``samplm_tiny``); explicit flags (``--steps``, ``--lr``, ...) and config-file settings
override the recipe's values. The recipe that ran is printed and recorded in the training config.
"""

from __future__ import annotations

from typing import Any

from ..base.loading import SMALL_MODEL_TYPES
from .config import TrainConfig

RECIPES: dict[str, dict[str, Any]] = {
    # Section 5.1 of the paper: 20k steps of 10 instances, AdamW 1e-5, warm-up 250, decay x0.1 twice.
    "paper": {},
    # Small data on CPU in minutes: a large learning rate over few steps, and all three of SAM's masks
    # trained towards the target. lr 1e-3: on real plate photos with samplm_lite it scored 37.05 mIoU
    # against 34.27 at 3e-3 (banners: 75.48 against 77.68); see docs/training.md.
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
# In ``fast``, these follow the number of steps (share of the steps) unless set explicitly.
FAST_SCALED = {"warmup_steps": 0.1, "val_every": 0.25, "checkpoint_every": 0.25}


def default_recipe(model_type: str | None) -> str:
    """``fast`` for samplm's own small bases, ``paper`` for real SAM (and unknown bases)."""
    return "fast" if model_type in SMALL_MODEL_TYPES else "paper"


def recipe_config(recipe: str, model_type: str | None = None, **overrides: Any) -> tuple[str, TrainConfig]:
    """``(resolved recipe name, TrainConfig)``: the recipe's settings updated by ``overrides``.

    Raises:
        ValueError: ``recipe`` is not one of :data:`RECIPE_CHOICES`, or an override is not a setting.
    """
    if recipe not in RECIPE_CHOICES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPE_CHOICES)}")
    name = default_recipe(model_type) if recipe == "auto" else recipe
    settings = {**RECIPES[name], **overrides}
    if name == "fast":
        for key, share in FAST_SCALED.items():
            if key not in overrides:
                settings[key] = max(1, round(share * settings["steps"]))
    settings["extra"] = {**settings.get("extra", {}), "recipe": name}
    return name, TrainConfig.from_dict(settings)
