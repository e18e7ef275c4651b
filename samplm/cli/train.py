"""``samplm train``: the run options (:class:`TrainJobSettings`) and one flag per training setting
(every option field of :class:`~samplm.train.settings.TrainConfig`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..adapter.config import check_task_name
from ..train.job_settings import TrainJobSettings
from ..train.recipes import recipe_config
from ..train.settings import TrainConfig
from .common import add_data_options, add_model_options, data_settings, model_settings, split
from .options import add_settings, option_fields, require, settings_from

EPILOG = """\
examples:
  samplm train --data plates/annotations --format voc --model-type samplm_lite --out runs/plates
  samplm train --data plates/annotations --format voc --model-type vit_h \\
      --checkpoint sam_vit_h_4b8939.pth --out runs/plates --recipe paper
  samplm train --config plates.yaml --lr 1e-4        # flags override the config file

The config file (YAML or JSON) may set any flag (use the long name with _ for -, e.g. batch_size),
including every training setting (e.g. warmup_steps, center_power, box_probability, precision).
Outputs in --out: adapter/ (best adapter), checkpoints/last.pt, metrics.jsonl, train_config.json.
"""


def train_settings() -> dict[str, Any]:
    """The :class:`TrainConfig` fields that ``samplm train`` takes as flags and config keys, with their
    defaults: every field of a number, string, bool or tuple type (not ``extra``)."""
    return {option.name: option.default for option in option_fields(TrainConfig)}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm train``: data, model, run options and one flag per training setting."""
    train = sub.add_parser(
        "train",
        help="train an adapter (PLM + PMM) on your annotations",
        description="Train a prompt-learning adapter on a frozen SAM from cached embeddings "
        "(images not yet cached are embedded first).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_options(train)
    add_model_options(train)
    group = add_settings(train, TrainJobSettings, title="training")
    group.add_argument("--config", help="YAML/JSON file with any option or training setting")
    add_settings(
        train,
        TrainConfig,
        title="training settings",
        description="The fields of samplm.train.settings.TrainConfig (see docs/training.md). Each defaults "
        "to the --recipe's value; the paper's is shown.",
        default_word="paper",
    )
    return train


def train_config(options: dict[str, Any], instances: int | None = None) -> tuple[str, TrainConfig]:
    """``(recipe name, TrainConfig)``: the recipe (sized to ``instances`` training instances when
    given), overridden by the training settings in ``options``."""
    settings = {name: options[name] for name in train_settings() if name in options}
    if options.get("no_pmm"):
        settings["use_pmm"] = False
    return recipe_config(
        options.get("recipe", "auto"), options["model_type"], instances=instances, **settings
    )


def task_name(job: TrainJobSettings, categories: list[str] | None) -> str:
    """The adapter's task: ``--task`` (checked with the other options), else the categories joined by
    ``+``, else the name of the ``--out`` folder, which must be a task name too."""
    if job.task:
        return job.task
    default = "+".join(categories or []) or Path(job.out).name
    return check_task_name(default, "--task (default: the --category names or the --out folder's name)")


def run(options: dict[str, Any]) -> int:
    """``samplm train``: recipe and settings, SAM and cache, the validation plan, then training."""
    from ..adapter.config import AdapterConfig
    from ..train.fit import fit_adapter, plan_for

    require(options, "data", "format", "model_type", "out")
    train_config(options)  # settings are checked before the data is read
    job, data = settings_from(TrainJobSettings, options), data_settings(options)
    task = task_name(job, data.category)
    dataset = data.read()
    plan = plan_for(dataset, split=job.split)
    train_part, val_part = dataset, None
    if plan.kind == "split":
        fraction = 0.2 if job.val_fraction is None else job.val_fraction
        train_part, val_part = split(data, dataset, job.val_data, fraction, options.get("seed", 0))
    recipe, config = train_config(options, instances=len(train_part))
    workspace = model_settings(options).workspace()
    sam, cache = workspace.model_and_cache([p for p in (train_part, val_part) if p is not None and len(p)])
    workspace.say(
        f"recipe {recipe} for {len(train_part)} instances: {config.steps} steps of {config.batch_size}, "
        f"lr {config.lr:g}, multimask {config.multimask}, validation every {config.val_every} steps"
        f"{f', patience {config.patience}' if config.patience else ''}; {plan.describe()}"
    )
    metadata = {"dataset": str(data.data), "format": data.format}
    result = fit_adapter(
        sam,
        train_part,
        val_part,
        cache,
        job.out,
        config=config,
        adapter_config=AdapterConfig(
            task=task, metadata={**metadata, "train_instances": len(train_part), "validation": plan.kind}
        ),
        plan=plan,
        model_type=options["model_type"],
        device=workspace.device,
        resume=not job.no_resume,
        progress=workspace.verbose,
    )
    workspace.say(f"adapter written to {result.adapter_dir}")
    workspace.say(f'use it: predictor.load_adapter("{result.adapter_dir}")')
    return 0
