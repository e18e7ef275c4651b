"""Named training recipes: which one runs by default, and how flags override it."""

from __future__ import annotations

import pytest

from samplm.train.recipes import RECIPES, default_recipe, recipe_config
from samplm.train.settings import TrainConfig


def test_auto_is_fast_for_small_bases_and_the_paper_for_sam():
    assert default_recipe("samplm_lite") == default_recipe("samplm_tiny") == "fast"
    assert default_recipe("vit_h") == default_recipe(None) == "paper"
    name, config = recipe_config("auto", "vit_h")
    paper = TrainConfig()
    assert name == "paper" and (config.steps, config.lr, config.batch_size) == (paper.steps, paper.lr, 10)
    assert (paper.steps, paper.lr, paper.warmup_steps) == (20_000, 1e-5, 250)  # Section 5.1
    name, config = recipe_config("auto", "samplm_lite")
    assert name == "fast" and config.steps == RECIPES["fast"]["steps"] and config.multimask == "all"
    assert config.extra["recipe"] == "fast"


def test_overrides_win_and_unknown_names_are_refused():
    name, config = recipe_config("paper", "samplm_lite", steps=7, lr=0.5, extra={"note": "x"})
    assert name == "paper" and config.steps == 7 and config.lr == 0.5
    assert config.extra == {"note": "x", "recipe": "paper"}
    with pytest.raises(ValueError, match="unknown recipe 'quick'; choose one of auto, paper, fast"):
        recipe_config("quick")
    with pytest.raises(ValueError, match="unknown training setting"):
        recipe_config("fast", stepz=3)


def test_fast_schedules_follow_the_step_count_unless_set():
    _, default = recipe_config("fast")
    assert (default.steps, default.warmup_steps, default.val_every) == (600, 60, 150)
    _, short = recipe_config("fast", steps=150)
    assert (short.warmup_steps, short.val_every, short.checkpoint_every) == (15, 38, 38)
    _, explicit = recipe_config("fast", steps=150, warmup_steps=3)
    assert explicit.warmup_steps == 3
    _, paper = recipe_config("paper", steps=150)
    assert paper.warmup_steps == 250  # the paper's schedule is not rescaled
