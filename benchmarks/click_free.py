"""Click-free segmentation on real photos: the numbers quoted in docs/segmentation.md.

    python benchmarks/click_free.py --data ../shared/data --out runs/bench-click-free

One run, on ``samplm_lite`` (``--model-type``):

1. Plates (``car_license_plate_andrewmvd``, the held-out half of ``samplm demo --task plates``): COCO
   mask AP / AP50 of prior + base decoder (PerSAM's setting, several instances), PerSAM-F (prior + two
   mask weights fitted on one training photo) and prior + adapter; every method uses the prototype
   ``samplm train`` wrote beside the plate adapter (trained here with ``samplm demo --task plates``, or
   given with ``--plates-adapter``). Target: prior + adapter AP50 >= 2 x prior + base decoder.
2. PerSeg (``perseg_persam_examples``): image ``00`` of each object is the reference, the others are
   targets. PerSAM, PerSAM-F, prior + an adapter trained on the reference alone (``fast`` recipe,
   ``--one-shot-steps`` steps), and SAM's grid generator with the best-matching mask (upper bound); mIoU.
   Target: prior + adapter >= PerSAM-F.
3. Speed: ``segment_images`` with the plate adapter on ``--speed-images`` plate photos resized to
   512 px, against ``set_image`` alone on the same photos (one run, ratio printed; target <= 1.5);
   the same with SAM's ViT-B geometry (random weights, ``--vit-b-images`` photos).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage
from segment_anything import sam_model_registry

from samplm import CustomSamPredictor, PromptAdapter
from samplm.adapter.config import AdapterConfig
from samplm.adapter.prototype import TargetPrototype, valid_cells
from samplm.data import InstanceDataset, read_mask_folder, read_voc
from samplm.data.images import find_images, load_image, read_mask_file
from samplm.demo import run_demo
from samplm.eval.click_free import (
    AutoMethod,
    OneShotCase,
    evaluate_ap,
    evaluate_one_shot,
    fit_persam_f,
)
from samplm.prompts.location_prior import PriorSettings
from samplm.segment.generator import AdapterMaskGenerator
from samplm.segment.jobs import make_tasks, segment_images
from samplm.segment.prototype_fitting import cell_coverage, fit_prototype
from samplm.train.recipes import recipe_config
from samplm.train.trainer import train
from samplm.train.training_set import TrainingSet
from samplm.workspace import Workspace, build_full_sam


def plate_adapter(args: argparse.Namespace) -> Path:
    """The plate adapter directory: ``--plates-adapter``, or trained by ``samplm demo --task plates``."""
    if args.plates_adapter:
        return Path(args.plates_adapter)
    result = run_demo(
        args.out / "plates-demo",
        task="plates",
        data=args.data / "car_license_plate_andrewmvd",
        model_type=args.model_type,
        visuals=0,
        progress=False,
    )
    return result.adapter_dir


def plates_ap(args: argparse.Namespace, predictor: CustomSamPredictor, adapter_dir: Path) -> dict:
    """AP / AP50 of the three click-free methods on the held-out half of the plate photos."""
    dataset = read_voc(args.data / "car_license_plate_andrewmvd" / "annotations")
    train_part, val_part = dataset.split(0.5, seed=0)
    prototype = TargetPrototype.load(adapter_dir)
    predictor.load_adapter(adapter_dir, adapter_name="plate", replace=True)
    path, instances = next(iter(train_part.by_image().items()))
    reference = load_image(path, instances[0].image_size)
    union = np.any([inst.mask(*reference.shape[:2]) for inst in instances], axis=0)
    weights = fit_persam_f(predictor, prototype, (reference, union), PriorSettings())

    def prior(**options) -> AdapterMaskGenerator:
        return AdapterMaskGenerator(predictor, prototype=prototype, **options)

    methods = [
        AutoMethod("prior + base decoder (PerSAM)", None, prior()),
        AutoMethod("prior + 2 fitted weights (PerSAM-F)", None, prior(mask_weights=weights)),
        AutoMethod("prior + adapter", "plate", prior()),
    ]
    if args.max_images:
        keep = set(list(val_part.by_image())[: args.max_images])
        val_part = InstanceDataset([i for i in val_part if i.image_path in keep], source=val_part.source)
    return evaluate_ap(predictor, val_part, methods, progress=False) | {"images": len(val_part.by_image())}


def prior_hits(args: argparse.Namespace, adapter_dir: Path) -> dict:
    """Share of held-out plate photos whose most similar cell lies on or next to a plate, with the
    adapter's (centred) prototype and with an uncentred one from the same training masks."""
    dataset = read_voc(args.data / "car_license_plate_andrewmvd" / "annotations")
    train_part, val_part = dataset.split(0.5, seed=0)
    workspace = Workspace(args.model_type, cache_dir=args.out / "cache", verbose=False)
    sam, cache = workspace.embed([dataset])
    train_set, val_set = (TrainingSet(part, cache, sam, progress=False) for part in (train_part, val_part))
    means = []
    for item in train_set.items:  # the prototype's recipe without centring
        cover = _cover(train_set, [item]).flatten()
        means.append(_cells(train_set, item).flatten(1) @ cover / cover.sum())
    raw = torch.nn.functional.normalize(torch.stack(means).mean(0), dim=0)
    centred = TargetPrototype.load(adapter_dir)
    hits = {"centred": [], "raw": []}
    for items in _by_image(val_set).values():
        near = ndimage.binary_dilation(_cover(val_set, items).numpy() > 0)
        entry = val_set.cache.get(items[0].image_path, items[0].expected_size)
        valid = valid_cells(near.shape, entry.input_size, val_set.img_size).numpy()
        maps = {
            "centred": centred.similarity(entry.embedding, entry.input_size, val_set.img_size).numpy(),
            "raw": torch.einsum(
                "c,chw->hw", raw, torch.nn.functional.normalize(_cells(val_set, items[0]), dim=0)
            ).numpy(),
        }
        for name, similarity in maps.items():
            top = np.unravel_index(np.where(valid, similarity, -np.inf).argmax(), similarity.shape)
            hits[name].append(bool(near[top]))
    return {name: float(np.mean(values)) for name, values in hits.items()} | {"images": len(hits["raw"])}


def _by_image(train_set: TrainingSet) -> dict[Path, list]:
    groups: dict[Path, list] = {}
    for item in train_set.items:
        groups.setdefault(item.image_path, []).append(item)
    return groups


def _cells(train_set: TrainingSet, item) -> torch.Tensor:
    return train_set.embedding(item)[0].float()


def _cover(train_set: TrainingSet, items: list) -> torch.Tensor:
    """``h x w`` share of each embedding cell covered by the items' targets (their union)."""
    union = np.any([item.target.low_res for item in items], axis=0)
    return torch.as_tensor(cell_coverage(union, train_set.grid))


def one_shot_adapter(args: argparse.Namespace, name: str, image: Path, mask: Path) -> Path:
    """An adapter trained on one reference image and mask (``fast`` recipe, ``--one-shot-steps``)."""
    folder = args.out / "perseg" / name
    for sub, source in (("images", image), ("masks", mask)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / sub / (source.stem + source.suffix))
    dataset = read_mask_folder(folder / "images", folder / "masks")
    workspace = Workspace(args.model_type, cache_dir=args.out / "cache", verbose=False)
    sam, cache = workspace.embed([dataset])
    _, config = recipe_config("fast", args.model_type, steps=args.one_shot_steps, seed=0)
    result = train(
        sam,
        TrainingSet(dataset, cache, sam, num_points=config.pmm_points, progress=False),
        folder / "train",
        config=config,
        adapter_config=AdapterConfig(task=name),
        model_type=args.model_type,
        resume=False,
        progress=False,
    )
    return result.adapter_dir


def perseg_one_shot(args: argparse.Namespace, predictor: CustomSamPredictor) -> dict:
    """The one-shot table on PerSeg: reference ``00`` of each object, the others as targets."""
    root = args.data / "perseg_persam_examples"
    cases, seconds = [], []
    for folder in sorted(p for p in (root / "Images").iterdir() if p.is_dir()):
        images = find_images(folder)
        masks = [root / "Annotations" / folder.name / f"{p.stem}.png" for p in images]
        start = time.perf_counter()
        adapter_dir = one_shot_adapter(args, folder.name, images[0], masks[0])
        seconds.append(time.perf_counter() - start)
        predictor.load_adapter(adapter_dir, adapter_name=folder.name, replace=True)
        pairs = [(load_image(i), read_mask_file(m)) for i, m in zip(images, masks, strict=True)]
        cases.append(OneShotCase(folder.name, pairs[0], pairs[1:], adapter_name=folder.name))
    table = evaluate_one_shot(predictor, cases, progress=False)
    return {"miou": table, "adapter_seconds": float(np.mean(seconds))}


def speed_photos(args: argparse.Namespace) -> list[Path]:
    """``--speed-images`` plate photos resized to 512 px (longest side), written once."""
    folder = args.out / "speed-images"
    folder.mkdir(parents=True, exist_ok=True)
    for path in find_images(args.data / "car_license_plate_andrewmvd" / "images")[: args.speed_images]:
        image = load_image(path)
        scale = 512 / max(image.shape[:2])
        small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        cv2.imwrite(str(folder / f"{path.stem}.png"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return find_images(folder)


def speed(predictor: CustomSamPredictor, adapter_dir: Path, photos: list[Path], out: Path) -> dict:
    """Seconds per photo: ``set_image`` alone, then ``segment_images`` (prior clicks + the adapter)."""
    loaded = [load_image(p) for p in photos]
    predictor.reset_image()
    start = time.perf_counter()
    for image in loaded:
        predictor.set_image(image)
    encode = (time.perf_counter() - start) / len(loaded)
    predictor.reset_image()
    tasks, _ = make_tasks(predictor, [adapter_dir])
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = segment_images(predictor, tasks, photos, out, progress=False)
    total = (time.perf_counter() - start) / len(photos)
    return {
        "images": len(photos),
        "set_image_s": encode,
        "segment_s": summary.seconds_per_image,
        "segment_run_s": total,
        "ratio": summary.seconds_per_image / encode,
        "masks": summary.masks,
        "no_match": summary.no_match,
    }


def speed_vit_b(args: argparse.Namespace, photos: list[Path]) -> dict:
    """:func:`speed` with SAM's ViT-B geometry (1024 px, 64 x 64 grid; random weights: only the time
    is measured) and an untrained adapter with a prototype of one photo's centre."""
    sam = sam_model_registry["vit_b"]().eval()
    predictor = CustomSamPredictor(sam)
    image = load_image(photos[0])
    mask = np.zeros(image.shape[:2], bool)
    h, w = mask.shape
    mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = True
    folder = args.out / "vit-b-adapter"
    adapter = PromptAdapter(AdapterConfig(task="timing"))
    adapter.bind_base_model(sam, model_type="vit_b")
    adapter.save_pretrained(folder)
    fit_prototype(predictor, [(image, mask)]).save(folder)
    return speed(predictor, folder, photos, args.out / "segment-vit-b")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder holding the two real-photo sets")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-click-free"))
    parser.add_argument("--model-type", default="samplm_lite")
    parser.add_argument("--plates-adapter", help="a trained plate adapter directory (default: train one)")
    parser.add_argument("--max-images", type=int, help="evaluate AP on at most this many plate photos")
    parser.add_argument("--one-shot-steps", type=int, default=200, help="steps of each one-shot adapter")
    parser.add_argument("--speed-images", type=int, default=100)
    parser.add_argument("--vit-b-images", type=int, default=3, help="photos timed with ViT-B geometry")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.time()
    adapter_dir = plate_adapter(args)
    predictor = CustomSamPredictor(build_full_sam(args.model_type).eval())
    record = {"prior_hits": prior_hits(args, adapter_dir)}
    record["plates"] = plates_ap(args, predictor, adapter_dir)
    record["perseg"] = perseg_one_shot(args, predictor)
    photos = speed_photos(args)
    record["speed"] = speed(predictor, adapter_dir, photos, args.out / "segment")
    record["speed_vit_b"] = speed_vit_b(args, photos[: args.vit_b_images])
    record["seconds"] = round(time.time() - start, 1)
    (args.out / "results.json").write_text(json.dumps(record, indent=1))
    print(report(args.model_type, record))


def report(model_type: str, record: dict) -> str:
    """The printed table, each target with ``ok`` or ``MISSED``."""
    plates, perseg, fast = record["plates"], record["perseg"], record["speed"]
    hits = record["prior_hits"]
    lines = [
        f"base: {model_type}",
        f"plates: most similar cell on or next to a plate in {100 * hits['centred']:.1f} % of "
        f"{hits['images']} held-out photos (uncentred features: {100 * hits['raw']:.1f} %)",
        f"plates: COCO mask AP on {plates['images']} held-out photos",
    ]
    for name, row in plates.items():
        if isinstance(row, dict):
            lines.append(
                f"  {name:<40} AP {100 * row['AP']:5.2f}  AP50 {100 * row['AP50']:5.2f}  "
                f"{row['seconds_per_image']:.3f} s/img  {int(row['detections'])} masks"
            )
    base, adapter = plates["prior + base decoder (PerSAM)"], plates["prior + adapter"]
    lines.append(_check("  AP50 prior + adapter >= 2 x prior + base", adapter["AP50"], 2 * base["AP50"]))
    lines.append(
        f"PerSeg one-shot mIoU (reference 00; one-shot adapters {perseg['adapter_seconds']:.0f} s each)"
    )
    for name, row in perseg["miou"].items():
        cases = "  ".join(f"{k} {100 * v:5.2f}" for k, v in row.items() if k != "all")
        lines.append(f"  {name:<40} {100 * row['all']:5.2f}   ({cases})")
    table = perseg["miou"]
    persam_f = table["PerSAM-F (prior + 2 fitted weights)"]["all"]
    lines.append(_check("  prior + adapter >= PerSAM-F", table["prior + adapter"]["all"], persam_f))
    for label, row in ((model_type, fast), ("vit_b (random weights)", record["speed_vit_b"])):
        lines.append(
            f"speed, {label}: {row['images']} photos at 512 px: set_image {row['set_image_s']:.3f} s, "
            f"segment {row['segment_s']:.3f} s per image (read, encode, decode, overlay); "
            f"ratio {row['ratio']:.2f} (target <= 1.5: {'ok' if row['ratio'] <= 1.5 else 'MISSED'})"
        )
    lines.append(f"torch threads {torch.get_num_threads()}, wall time {record['seconds']:.0f} s")
    return "\n".join(lines)


def _check(name: str, value: float, target: float) -> str:
    verdict = "ok" if value >= target else "MISSED"
    return f"{name:<44} {100 * value:6.2f}   target >= {100 * target:6.2f}   {verdict}"


if __name__ == "__main__":
    main()
