"""One evaluation run end to end: SAM-F fitting, metrics, sensitivity maps, visual reports, files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..adapter.prompt_adapter import PromptAdapter
from ..cache.embeddings import EmbeddingCache
from ..data import InstanceDataset, load_image
from ..train.training_set import TrainingSet
from ..utils.ranks import Ranks
from .methods import SAM, SAM_F
from .protocol import EvalResult, InstancePredictor, evaluate, instances_by_id
from .report import miou_rows, miou_table, save_instance_panel, save_sensitivity_png, write_results
from .samf import SamF, train_samf
from .sensitivity import sensitivity_map


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:80]


def run_evaluation(
    sam: Any,
    eval_data: InstanceDataset,
    cache: EmbeddingCache,
    out: str | Path,
    *,
    adapters: dict[str, PromptAdapter] | None = None,
    samf_data: InstanceDataset | None = None,
    samf_steps: int = 300,
    prompt: str = "point",
    refine: bool = True,
    sensitivity: int = 2,
    sensitivity_grid: int = 16,
    visuals: int = 3,
    max_instances: int | None = None,
    config: dict[str, Any] | None = None,
    base: str = "SAM",
    device: str | torch.device = "cpu",
    progress: bool = True,
    ranks: Ranks | None = None,
) -> EvalResult:
    """Evaluate and write ``results.json``, ``results.md``, ``visuals/*.png``, ``sensitivity/*.png``.

    Args:
        sam: frozen SAM (no image encoder needed).
        eval_data: instances to evaluate (every image must be in ``cache``).
        cache: embedding cache.
        out: output directory.
        adapters: ``{name: adapter}`` to compare.
        samf_data: training instances to fit SAM-F on (point prompts); ``None`` leaves SAM-F out.
        samf_steps: SAM-F optimisation steps.
        prompt: ``"point"`` or ``"box"``.
        refine: include PMM refinement rows.
        sensitivity: number of instances (the first ones) to draw prompt sensitivity maps for.
        sensitivity_grid: clicks per side of each map.
        visuals: number of worst and of best instances to render.
        max_instances: cap on evaluated instances.
        config: run description stored in ``results.json``.
        base: the loaded base's name (its model type, e.g. ``samplm_lite``): what ``results.md`` and
            the pictures call plain SAM's rows (``samplm_lite top``); ``results.json`` keeps the
            method names (``SAM``) as keys.
        ranks: under a sharded launch, the instances are shared out (:func:`.protocol.evaluate`); the
            main process fits SAM-F (sent to the others) and alone writes the files and pictures.
    """
    out, ranks = Path(out), ranks or Ranks()
    adapters = adapters or {}
    fitted = ranks.together(  # on the main process; every rank meets so a failure stops them all
        lambda: (
            _fitted_samf(sam, samf_data, cache, samf_steps, prompt, device, progress)
            if ranks.is_main
            else None
        )
    )
    samf = ranks.broadcast(fitted)
    result = evaluate(
        sam,
        eval_data,
        cache,
        adapters,
        prompt=prompt,
        samf=samf,
        refine=refine,
        max_instances=max_instances,
        device=device,
        progress=progress,
        ranks=ranks,
    )
    if not ranks.is_main:
        return result
    predictor = InstancePredictor(sam, adapters, samf=samf, refine=refine, device=device)
    by_id = instances_by_id(eval_data)
    files = {
        **_write_visuals(out, result, predictor, by_id, cache, visuals, base),
        "Prompt sensitivity maps": [],
    }
    summaries: dict[str, dict[str, dict[str, float]]] = {}
    if prompt == "point":
        files["Prompt sensitivity maps"], summaries = _write_sensitivity(
            out, result.instances[:sensitivity], predictor, by_id, cache, sensitivity_grid, base
        )
    run_config = {
        **(config or {}),
        "prompt": prompt,
        "adapters": list(adapters),
        "sensitivity": summaries,
        "samf": SAM_F in result.methods,
    }
    write_results(out, result, run_config, files, base)
    return result


def _fitted_samf(
    sam: Any,
    samf_data: InstanceDataset | None,
    cache: EmbeddingCache,
    steps: int,
    prompt: str,
    device: str | torch.device,
    progress: bool,
) -> SamF | None:
    """SAM-F fitted on ``samf_data`` for point prompts; ``None`` without data or for boxes."""
    if samf_data is None or not len(samf_data) or prompt != "point":
        return None
    train_set = TrainingSet(samf_data, cache, sam, progress=False)
    return train_samf(sam, train_set, steps=steps, device=device, progress=progress)


def _write_visuals(
    out: Path, result: EvalResult, predictor, by_id, cache, count: int, base: str
) -> dict[str, list[str]]:
    """Panels of the ``count`` worst and best instances (by the first adapter's PLM, else SAM)."""
    files: dict[str, list[str]] = {"Worst instances": [], "Best instances": []}
    primary = next((m for m in result.methods if m.kind == "top" and m.adapter is not None), SAM)
    ranked = sorted(result.instances, key=lambda r: (r.iou[primary], r.instance_id))
    shown = [m for m in result.methods if m.kind != "oracle"]
    for title, chosen, tag in (
        ("Worst instances", ranked[:count], "worst"),
        ("Best instances", ranked[::-1][:count], "best"),
    ):
        for rank, record in enumerate(chosen, 1):
            inst = by_id[record.instance_id]
            entry = cache.get(inst.image_path, inst.image_size)
            image = load_image(inst.image_path, inst.image_size)
            gt = inst.mask(*entry.original_size)
            preds = predictor.predict(entry, record.prompt, gt)
            name = f"visuals/{tag}_{rank:02d}_{_safe(record.instance_id)}.png"
            masks = {m: (preds[m].mask, record.iou[m]) for m in shown}
            save_instance_panel(out / name, image, gt, masks, record.prompt, base)
            files[title].append(name)
    return files


def _write_sensitivity(out: Path, records, predictor, by_id, cache, grid: int, base: str):
    """Prompt sensitivity maps of ``records``; returns the files written and each map's summary."""
    files, summaries = [], {}
    for record in records:
        inst = by_id[record.instance_id]
        entry = cache.get(inst.image_path, inst.image_size)
        gt = inst.mask(*entry.original_size)
        maps = sensitivity_map(predictor, entry, gt, grid=grid)
        name = f"sensitivity/{_safe(record.instance_id)}.png"
        save_sensitivity_png(out / name, load_image(inst.image_path, inst.image_size), gt, maps, base)
        files.append(name)
        summaries[record.instance_id] = maps.summary()
    return files, summaries


def summary_line(result: EvalResult, base: str = "SAM", prompt: str = "point") -> str:
    """The table ``samplm eval`` prints: mIoU over all instances, in percent, one row per method (plain
    SAM's rows named after ``base``); the same Markdown as ``samplm demo``'s (:func:`.report.miou_table`)."""
    return miou_table(miou_rows(result, base), prompt)


__all__ = ["run_evaluation", "summary_line"]
