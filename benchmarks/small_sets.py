"""How much data? The default ``samplm train`` pipeline on small real sets, against plain SAM and SAM-F.

    python benchmarks/small_sets.py --data ../shared/data --out runs/small-sets

For each training-set size (photos of Kaggle's plate set, nested subsets of the half that is not held
out) and for PerSeg's one-object sets (each object's 3 photos: train on 2, test on the third, every
way round), it runs what ``samplm train`` runs with no flags (``fit_adapter``: the recipe sized to the
set, k-fold judgement under 20 photos, the best candidate exported) and evaluates on held-out photos
with one centre click: the base's top mask, SAM-F fitted on the same training photos, the adapter, and
the adapter without its score readout (the same adapter with ``plm.score_readout`` and ``plm.mask_bias``
zeroed; equal to the adapter where the run did not keep a readout), and whether the kept readout came with
a mask bias (``kept+bias``).

Checks (issue: adapters that never lose), per row:
  adapter >= max(base top, SAM-F) - 0.5 mIoU, and adapter >= base top + 10 where SAM-F gains 10.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from samplm import AdapterConfig
from samplm.base import build_sam
from samplm.cache.embeddings import EmbeddingCache
from samplm.data import InstanceDataset, read_mask_folder, read_voc
from samplm.eval import run_evaluation
from samplm.eval.methods import SAM, SAM_F, SAM_ORACLE, plm_method
from samplm.train.fit import fit_adapter, plan_for
from samplm.train.recipes import recipe_config
from samplm.train.score_readout import without_readout


def subset(dataset: InstanceDataset, images: list[Path]) -> InstanceDataset:
    keep = set(images)
    return InstanceDataset([i for i in dataset if i.image_path in keep], source=dataset.source)


def run_case(sam, cache, train_photos, test, out: Path, model_type: str, device: str, seed: int) -> dict:
    """``samplm train``'s default pipeline on ``train_photos``, evaluated on ``test``."""
    plan = plan_for(train_photos)
    train_part, val_part = train_photos.split(0.2, seed) if plan.kind == "split" else (train_photos, None)
    _, config = recipe_config("auto", model_type, instances=len(train_part), seed=seed)
    started = time.perf_counter()
    result = fit_adapter(
        sam,
        train_part,
        val_part,
        cache,
        out / "run",
        config=config,
        adapter_config=AdapterConfig(task="task"),
        plan=plan,
        model_type=model_type,
        device=device,
        progress=False,
    )
    seconds = time.perf_counter() - started
    judged = result.judgement
    adapters = {"task": result.adapter}
    if judged.readout_kept:
        adapters["no-readout"] = without_readout(result.adapter)
    evaluated = run_evaluation(
        sam,
        test,
        cache,
        out / "eval",
        adapters=adapters,
        samf_data=train_photos,
        refine=False,
        sensitivity=0,
        visuals=0,
        device=device,
        progress=False,
    )
    miou = {
        name: 100 * evaluated.miou[m]["all"]
        for name, m in (
            ("top", SAM),
            ("oracle", SAM_ORACLE),
            ("samf", SAM_F),
            ("adapter", plm_method("task")),
        )
    }
    miou["no_readout"] = (
        100 * evaluated.miou[plm_method("no-readout")]["all"] if judged.readout_kept else miou["adapter"]
    )
    return {
        **miou,
        "readout": ("kept+bias" if judged.readout_choice[1] else "kept") if judged.readout_kept else "-",
        "selected": judged.selected,
        "validation": plan.kind,
        "steps": result.steps,
        "val": {"sam": judged.sam, "samf": judged.samf, "trained": judged.trained},
        "train_seconds": round(seconds, 1),
    }


def verdict(row: dict) -> str:
    ok = row["adapter"] >= max(row["top"], row["samf"]) - 0.5
    if row["samf"] - row["top"] >= 10:
        ok = ok and row["adapter"] >= row["top"] + 10
    return "ok" if ok else "MISSED"


def plates(args, sam, device) -> list[dict]:
    root = args.data / "car_license_plate_andrewmvd"
    dataset = read_voc(root / "annotations")
    pool, test = dataset.split(0.5, seed=0)  # the demo's held-out half
    test_images = test.image_paths()[: args.test_images or None]
    test = subset(test, test_images)
    order = np.random.default_rng(0).permutation(len(pool.image_paths()))
    pool_images = [pool.image_paths()[i] for i in order]
    cache = EmbeddingCache.for_model(args.out / "cache", sam)
    needed = test_images + pool_images[: max(args.sizes)]
    cache.build(sam, needed, expected_sizes=dataset.expected_sizes(), progress=False)
    rows = []
    for size in args.sizes:
        for seed in args.seeds:
            photos = subset(pool, pool_images[:size])
            row = run_case(
                sam, cache, photos, test, args.out / f"plates-{size}-{seed}", args.model_type, device, seed
            )
            rows.append({"set": f"plates {size}", "seed": seed, "test": len(test_images), **row})
            print(format_row(rows[-1]), flush=True)
    return rows


def perseg(args, sam, device) -> list[dict]:
    root = args.data / "perseg_persam_examples"
    dataset = read_mask_folder(root / "Images", root / "Annotations")
    cache = EmbeddingCache.for_model(args.out / "cache", sam)
    cache.build(sam, dataset.image_paths(), expected_sizes=dataset.expected_sizes(), progress=False)
    rows = []
    for category in dataset.categories:
        photos = dataset.select([category])
        per_fold = []
        for held in photos.image_paths():
            train_photos = subset(photos, [p for p in photos.image_paths() if p != held])
            out = args.out / f"perseg-{category}-{held.stem}"
            per_fold.append(
                run_case(sam, cache, train_photos, subset(photos, [held]), out, args.model_type, device, 0)
            )
        keys = ("top", "oracle", "samf", "adapter", "no_readout", "train_seconds")
        row = {k: float(np.mean([r[k] for r in per_fold])) for k in keys}
        row["selected"] = "/".join(r["selected"] for r in per_fold)
        row["readout"] = "/".join(r["readout"] for r in per_fold)
        row["validation"], row["steps"] = per_fold[0]["validation"], max(r["steps"] for r in per_fold)
        rows.append({"set": f"PerSeg {category} (2 photos)", "seed": 0, "test": len(per_fold), **row})
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict) -> str:
    return (
        f"| {row['set']} | {row['seed']} | {row['test']} | {row['top']:.2f} | {row['samf']:.2f} | "
        f"{row['adapter']:.2f} | {row['no_readout']:.2f} | {row['oracle']:.2f} | {row['selected']} | "
        f"{row['readout']} | {row['validation']} | "
        f"{row['steps']} | {verdict(row)} |"
    )


HEADER = (
    "| training set | seed | test photos | base top | SAM-F | adapter | without its readout | base oracle | "
    "exported | readout | validation | steps | check |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder holding the two real-photo sets")
    parser.add_argument("--out", type=Path, default=Path("runs/small-sets"))
    parser.add_argument("--model-type", default="samplm_lite")
    parser.add_argument("--sizes", type=int, nargs="+", default=[15, 30, 60, 150])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--test-images", type=int, default=0, help="held-out plate photos (0: all 216)")
    parser.add_argument("--skip-perseg", action="store_true")
    parser.add_argument("--skip-plates", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    start = time.time()
    sam = build_sam(args.model_type).to(args.device).eval()
    print(f"base {args.model_type}, device {args.device}\n{HEADER}", flush=True)
    rows = [] if args.skip_plates else plates(args, sam, args.device)
    if not args.skip_perseg:
        rows += perseg(args, sam, args.device)
    missed = sum(verdict(r) != "ok" for r in rows)
    print(f"{len(rows) - missed} passed, {missed} missed; wall time {time.time() - start:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
