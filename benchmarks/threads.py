"""Where torch's CPU threads help and where they hurt: each stage at 1 and N threads, idle and busy.

One run, CPU, ``samplm_lite`` with its shipped weights, generated banner images::

    python benchmarks/threads.py
    python benchmarks/threads.py --reps 5 --images 6

Stages (each through the library's own code, as ``samplm demo`` / ``train`` / ``eval`` run it):

* image encoder: :meth:`EmbeddingCache.build` of fresh images (seconds per image);
* training step: one step of the ``fast`` recipe (batch of 8 instances, PLM + PMM) on cached embeddings,
  through :class:`~samplm.train.step_model.StepModel`;
* SAM-F: :func:`~samplm.eval.samf.fit_blend` optimiser steps on SAM's centre-click logits;
* evaluation click: :meth:`InstancePredictor.predict` (SAM and the adapter, PMM refinement) of one
  centre click;
* sensitivity map: :func:`~samplm.eval.sensitivity.sensitivity_map`, 8 x 8 clicks in batches of 16.

Each is timed with ``torch.set_num_threads(1)`` and ``N`` (``os.cpu_count()``), interleaved, first on
an idle machine, then with one competing CPU-bound process (a torch matrix-product loop with torch's
default threads, as another job would run). Printed: median time per unit and the ratio
``time at N / time at 1`` (> 1: the extra threads slow the stage down). Run it on an otherwise idle
machine (the "idle" part assumes one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from samplm.adapter.config import AdapterConfig
from samplm.base import build_sam
from samplm.cache.embeddings import EmbeddingCache
from samplm.data import read_mask_folder
from samplm.data.synthetic import write_banner_dataset
from samplm.eval.protocol import InstancePredictor
from samplm.eval.samf import _sam_logits, fit_blend
from samplm.eval.sensitivity import sensitivity_map
from samplm.prompts.sampling import PromptSampler
from samplm.train.batch import build_batch
from samplm.train.recipes import recipe_config
from samplm.train.run_setup import new_adapter
from samplm.train.step_model import StepModel, freeze
from samplm.train.training_set import TrainingSet
from samplm.utils.threads import torch_threads

COMPETITOR = """
import torch
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""


def timed(work: Callable[[], None], threads: int) -> float:
    with torch_threads(threads):
        start = time.perf_counter()
        work()
        return time.perf_counter() - start


def measure(stages: dict[str, tuple[Callable[[], None], int]], counts: list[int], reps: int) -> dict:
    """``{stage: {threads: median seconds per unit}}``, the thread counts interleaved in each repetition."""
    times: dict[str, dict[int, list[float]]] = {name: {n: [] for n in counts} for name in stages}
    for work, _ in stages.values():
        for n in counts:  # warm-up at each count
            timed(work, n)
    for _ in range(reps):
        for name, (work, units) in stages.items():
            for n in counts:
                times[name][n].append(timed(work, n) / units)
    return {name: {n: statistics.median(v) for n, v in by_n.items()} for name, by_n in times.items()}


def build_stages(root: Path, images: int) -> dict[str, tuple[Callable[[], None], int]]:
    """The stages to time, each ``(work, units done by one call)``."""
    folder = write_banner_dataset(root / "data", images, seed=0, progress=False)
    dataset = read_mask_folder(folder / "images", folder / "masks")
    sam = freeze(build_sam("samplm_lite").eval())
    cache = EmbeddingCache.for_model(root / "cache", sam)
    cache.build(sam, dataset.image_paths(), progress=False)
    paths = dataset.image_paths()[:2]
    fresh = iter(range(10**6))

    def encode() -> None:  # two images into an empty cache
        EmbeddingCache.for_model(root / f"enc{next(fresh)}", sam).build(sam, paths, progress=False)

    _, config = recipe_config("fast", seed=0, pmm_points=20)
    train_set = TrainingSet(dataset, cache, sam, num_points=20, progress=False)
    adapter = new_adapter(AdapterConfig(task="banner"), config)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=config.lr)
    step_model, sampler, rng = StepModel(adapter, sam, config), PromptSampler(), np.random.default_rng(0)
    picks = train_set.items[: config.batch_size]

    def train_step() -> None:
        optimizer.zero_grad()
        batch = build_batch(train_set, picks, rng, sampler, device=torch.device("cpu"), pmm_jitter=0.0)
        step_model(batch, train_set.cell)["loss"].backward()
        optimizer.step()

    logits, targets = _sam_logits(sam, train_set, 64, "cpu")
    samf_steps = 20

    def samf() -> None:
        fit_blend(logits, targets, steps=samf_steps, batch_size=64)

    predictor = InstancePredictor(sam, {"banner": adapter.eval()})
    first = dataset.by_image()[paths[0]][0]
    entry = cache.get(first.image_path, first.image_size)
    gt = first.mask(*entry.original_size)
    prompts = predictor.prompt_for(gt, "point")

    def click() -> None:
        for _ in range(5):
            predictor._predict(entry, prompts, gt)  # the stage without its own thread choice

    def sensitivity() -> None:
        sensitivity_map(predictor, entry, gt, grid=8)

    return {
        "image encoder (s / image)": (encode, len(paths)),
        f"training step, fast recipe, batch {config.batch_size} (s / step)": (train_step, 1),
        f"SAM-F fitting, {len(logits)} instances (s / step)": (samf, samf_steps),
        "evaluation click, SAM + adapter (s / click)": (click, 5),
        "sensitivity map, 8 x 8 clicks (s / map)": (sensitivity, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8, help="banner images generated (default 8)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per stage and count")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    counts = [1, cpus] if cpus > 1 else [1]
    with tempfile.TemporaryDirectory(prefix="samplm-threads-") as workdir:
        stages = build_stages(Path(workdir), args.images)
        started = time.perf_counter()
        results = {"idle": measure(stages, counts, args.reps)}
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
        try:
            time.sleep(3)  # let it start
            results["busy"] = measure(stages, counts, args.reps)
        finally:
            competitor.terminate()
            competitor.wait()
    n = counts[-1]
    print(
        f"\n{cpus} CPUs, torch {torch.__version__}, {args.reps} reps, {time.perf_counter() - started:.0f} s; "
        "busy: one competing process (torch matmul loop, default threads)"
    )
    header = f"1 thread | {{}}, {n} threads | ratio {n}/1"
    print(f"| stage | idle, {header.format('idle')} | busy, {header.format('busy')} |")
    print("|---|---|---|---|---|---|---|")
    for name in stages:
        cells = []
        for state in ("idle", "busy"):
            one, many = results[state][name][1], results[state][name][n]
            cells += [f"{one:.4g}", f"{many:.4g}", f"**{many / one:.2f}**"]
        print(f"| {name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
