"""``samplm eval``: the paper's single-click protocol (or ``--auto``: click-free COCO mask AP) on the
evaluation split, with the options of :class:`~samplm.eval.settings.EvalSettings`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..eval.settings import EvalSettings
from ..utils.files import atomic_write_text
from .common import (
    CONFIG_HELP,
    add_data_options,
    add_model_options,
    data_settings,
    load_adapters,
    model_settings,
    predictor,
    split,
)
from .options import add_settings, require, settings_from

if TYPE_CHECKING:
    from ..data import InstanceDataset
    from ..data.settings import DataSettings


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm eval``: data, model and evaluation options."""
    evaluate = sub.add_parser(
        "eval",
        help="evaluate SAM, SAM-F and adapters with the paper's single-click protocol",
        description="Evaluate on the validation split of --data (the same split as `samplm train` with the "
        "same --val-fraction/--seed) or on --val-data: one click at each instance's centre, SAM's top "
        "mask and oracle, SAM-F fitted on the training split, each adapter (PLM, oracle, PMM refinement). "
        "Writes results.json, results.md, visuals/ and sensitivity/ into --out.",
    )
    add_data_options(evaluate)
    add_model_options(evaluate)
    group = add_settings(evaluate, EvalSettings, title="evaluation")
    group.add_argument("--config", help=CONFIG_HELP)
    return evaluate


def _parts(settings: EvalSettings, data: DataSettings) -> tuple[InstanceDataset, InstanceDataset]:
    """``(training part, evaluation part)`` of ``--data`` (or ``--val-data``), the latter not empty."""
    train_part, eval_part = split(data, data.read(), settings.val_data, settings.val_fraction, settings.seed)
    if not len(eval_part):
        raise ValueError(
            "nothing to evaluate: the evaluation split is empty (check --val-fraction / --val-data)"
        )
    return train_part, eval_part


def run(options: dict[str, Any]) -> int:
    """``samplm eval``: the paper's single-click protocol on the evaluation split."""
    from ..eval import run_evaluation, summary_line

    require(options, "data", "format", "model_type", "out")
    settings, data = settings_from(EvalSettings, options), data_settings(options)
    model = model_settings(options)
    _, ranks = model.placement()  # every step below that may fail on one rank fails them all
    train_part, eval_part = ranks.together(lambda: _parts(settings, data))
    ranks.agree([i.instance_id for part in (train_part, eval_part) for i in part], "instances")
    if settings.auto:
        return run_auto(options, settings, eval_part)
    adapters = ranks.together(lambda: load_adapters(settings.adapter or []))
    use_samf = not settings.no_samf and len(train_part) > 0
    workspace = model.workspace()
    sam, cache = workspace.model_and_cache([eval_part] + ([train_part] if use_samf else []))
    for adapter in adapters.values():
        adapter.check_compatible(sam)
    config = {
        "data": data.data,
        "val_data": settings.val_data,
        "format": data.format,
        "category": data.category,
        "model_type": model.model_type,
        "checkpoint": model.checkpoint,
        "val_fraction": settings.val_fraction,
        "seed": settings.seed,
    }
    result = run_evaluation(
        sam,
        eval_part,
        cache,
        settings.out,
        adapters=adapters,
        samf_data=train_part if use_samf else None,
        config=config,
        base=model.model_type,
        device=workspace.device,
        ranks=workspace.ranks,
        progress=workspace.verbose,
        **settings.protocol(),
    )
    if not workspace.ranks.is_main:
        return 0
    print(summary_line(result, model.model_type, settings.prompt))
    print(f"results written to {Path(settings.out) / 'results.md'} and results.json")
    return 0


def run_auto(options: dict[str, Any], settings: EvalSettings, eval_part: InstanceDataset) -> int:
    """``samplm eval --auto``: COCO mask AP of click-free segmentation on the evaluation split."""
    from ..eval.click_free import AutoMethod, evaluate_ap
    from ..segment.jobs import make_tasks

    require(options, "adapter")
    engine = predictor(model_settings(options))
    tasks, _ = make_tasks(engine, settings.adapter, prompts="prior")
    methods = [AutoMethod(f"prior + {t.name} adapter", t.adapter_name, t.generator) for t in tasks]
    methods.insert(0, AutoMethod("prior + base decoder", None, tasks[0].generator))
    results = evaluate_ap(engine, eval_part, methods)
    out = Path(settings.out)
    atomic_write_text(out / "auto_results.json", json.dumps(results, indent=1))
    print("| method (no clicks) | AP | AP50 | s / image |\n|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {100 * row['AP']:.2f} | {100 * row['AP50']:.2f} | {row['seconds_per_image']:.3f} |"
        )
    print(f"results written to {out / 'auto_results.json'}")
    return 0
