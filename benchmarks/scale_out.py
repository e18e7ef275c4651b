"""Throughput of ``samplm embed`` and ``samplm segment`` at 1 and 2 processes, and the cost of ``segment``
per image against ``set_image`` alone, on ``samplm_lite`` and real photos.

1. **Segment cost per image** (one process): Kaggle plate photos resized to 512 px (longest side), a
   reference prototype from the first photo's plate box; ``set_image`` alone on every photo, then a whole
   ``segment_images`` run (read, encode, prior clicks, decode, RLE, overlays, per-image files), interleaved
   ``--repeats`` times; the medians' ratio (target <= 1.5). The same with ``--max-clicks 4`` shows what the
   prior's clicks cost.
2. **Images per second at 1 and 2 processes**: ``samplm embed`` (the plate photos and their VOC boxes, a
   fresh cache each time) and ``samplm segment`` (the 512 px photos) run under ``torchrun --nproc_per_node
   N`` with ``OMP_NUM_THREADS`` = cores / N, each configuration ``--repeats`` times, alternating; the
   median wall time of the whole command (start-up included) and images/s, and the ratio 2 / 1::

    python benchmarks/scale_out.py --data ../shared/data                  # about 10 minutes on 2 cores
    python benchmarks/scale_out.py --data ../shared/data --images 16 --repeats 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import torch

from samplm import AdapterConfig, CustomSamPredictor, PromptAdapter
from samplm.base import build_sam
from samplm.data.images import find_images, load_image
from samplm.prompts.location_prior import PriorSettings
from samplm.segment.jobs import make_tasks, segment_images
from samplm.segment.prototype_fitting import fit_prototype

TARGET = 1.5
PLATES = "car_license_plate_andrewmvd"


def photos_512(data: Path, count: int, folder: Path) -> list[Path]:
    """The first ``count`` plate photos resized to 512 px (longest side) as PNGs in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in find_images(data / PLATES / "images")[:count]:
        image = load_image(path)
        scale = 512 / max(image.shape[:2])
        small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        cv2.imwrite(str(folder / f"{path.stem}.png"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return find_images(folder)


def reference(data: Path, photo: Path, folder: Path) -> tuple[Path, Path]:
    """The photo and a mask of its first plate box (from its VOC file, scaled to the photo)."""
    root = ET.parse(data / PLATES / "annotations" / f"{photo.stem}.xml").getroot()
    size = root.find("size")
    width = float(size.find("width").text)
    image = load_image(photo)
    scale = image.shape[1] / width
    box = root.find("object/bndbox")
    x1, y1, x2, y2 = (round(float(box.find(k).text) * scale) for k in ("xmin", "ymin", "xmax", "ymax"))
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[y1:y2, x1:x2] = 255
    cv2.imwrite(str(folder / "reference_mask.png"), mask)
    return photo, folder / "reference_mask.png"


def segment_cost(photos: list[Path], ref: tuple[Path, Path], work: Path, repeats: int) -> dict[str, float]:
    """Median seconds per photo of ``set_image`` alone and of whole ``segment_images`` runs, with the
    default prior and with ``max_clicks=4``."""
    sam = build_sam("samplm_lite")
    predictor = CustomSamPredictor(sam)
    image, mask = load_image(ref[0]), cv2.imread(str(ref[1]), cv2.IMREAD_GRAYSCALE) > 0
    adapter = PromptAdapter(AdapterConfig(task="plate"))
    adapter.bind_base_model(sam, model_type="samplm_lite")
    adapter.save_pretrained(work / "adapter")
    fit_prototype(predictor, [(image, mask)]).save(work / "adapter")
    loaded = [load_image(p) for p in photos]
    runs = {"default": make_tasks(predictor, [work / "adapter"])[0]}
    runs["max_clicks=4"] = make_tasks(predictor, [work / "adapter"], prior=PriorSettings(max_clicks=4))[0]
    times: dict[str, list[float]] = {"set_image": [], **{name: [] for name in runs}}
    for _ in range(repeats):
        predictor.reset_image()
        start = time.perf_counter()
        for pixels in loaded:
            predictor.set_image(pixels)
        times["set_image"].append((time.perf_counter() - start) / len(loaded))
        for name, tasks in runs.items():
            shutil.rmtree(work / "segment", ignore_errors=True)
            predictor.reset_image()
            start = time.perf_counter()
            segment_images(predictor, tasks, photos, work / "segment", progress=False)
            times[name].append((time.perf_counter() - start) / len(photos))
    return {name: statistics.median(values) for name, values in times.items()}


def _free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def launched(nproc: int, args: list[str]) -> float:
    """Wall seconds of ``torchrun --nproc_per_node nproc -m samplm.cli args`` (threads: cores / nproc)."""
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    command += ["--master_addr", "127.0.0.1", "--master_port", _free_port(), "-m", "samplm.cli", *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(args[:1])} at {nproc} processes failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def throughput(data: Path, photos: list[Path], ref: tuple[Path, Path], work: Path, repeats: int) -> dict:
    """Median wall seconds of embed and segment at 1 and 2 processes."""
    subset = work / "embed-images"
    subset.mkdir(exist_ok=True)
    for photo in photos:  # the original photos of the 512 px ones, with their annotations
        shutil.copy(data / PLATES / "images" / photo.name, subset / photo.name)
    model = ["--model-type", "samplm_lite", "--device", "cpu"]
    embed = ["embed", "--data", str(data / PLATES / "annotations"), "--images", str(subset), "--format"]
    embed += ["voc", *model]
    segment = ["segment", "--images", str(photos[0].parent), "--reference-image", str(ref[0])]
    segment += ["--reference-mask", str(ref[1]), *model]
    walls: dict[tuple[str, int], list[float]] = {}
    for repeat in range(repeats):
        for nproc in (1, 2) if repeat % 2 == 0 else (2, 1):
            cache, out = work / f"cache-{nproc}", work / f"out-{nproc}"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            walls.setdefault(("embed", nproc), []).append(launched(nproc, [*embed, "--cache", str(cache)]))
            walls.setdefault(("segment", nproc), []).append(launched(nproc, [*segment, "--out", str(out)]))
    return {key: statistics.median(values) for key, values in walls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=48, help="plate photos to use")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = photos_512(args.data, args.images, work / "photos")
        ref = reference(args.data, photos[0], work)
        cost = segment_cost(photos, ref, work, args.repeats)
        walls = throughput(args.data, photos, ref, work, args.repeats)
    print(f"{len(photos)} photos, {os.cpu_count()} CPU cores, medians of {args.repeats} interleaved runs\n")
    print("| stage, one process (512 px, samplm_lite) | s / image | ratio to set_image |\n|---|---|---|")
    for name, seconds in cost.items():
        label = "set_image alone" if name == "set_image" else f"segment_images, prior {name}"
        print(f"| {label} | {seconds:.3f} | {seconds / cost['set_image']:.2f} |")
    ratio = cost["default"] / cost["set_image"]
    verdict = "ok" if ratio <= TARGET else "MISSED"
    print(f"\nsegment / set_image {ratio:.2f}: {verdict} (target <= {TARGET})\n")
    print("| command | 1 process: s (images/s) | 2 processes: s (images/s) | speed-up 2 / 1 |")
    print("|---|---|---|---|")
    n = len(photos)
    for command in ("embed", "segment"):
        one, two = walls[(command, 1)], walls[(command, 2)]
        rates = f"{one:.1f} ({n / one:.2f}) | {two:.1f} ({n / two:.2f})"
        print(f"| samplm {command} | {rates} | {one / two:.2f} |")


if __name__ == "__main__":
    main()
