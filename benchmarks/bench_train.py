"""Training speed with the embedding cache vs re-encoding every step, and peak memory of a cached run.

One run, CPU by default, SAM ``vit_b`` architecture with random weights (speed and memory do not depend
on the weight values)::

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --images 4 --steps 10 --device cuda

It (1) writes a random vit_b checkpoint and a small synthetic mask dataset, (2) caches embeddings with
``samplm embed``, (3) times training steps from the cache and steps that re-run the image encoder,
and prints the ratio (target >= 20x), and (4) runs ``samplm train`` from the cache in a subprocess and
prints its peak RSS and whether the image encoder was built (targets: not built, < 3 GB).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from segment_anything import sam_model_registry
from segment_anything.utils.transforms import ResizeLongestSide

from samplm import AdapterConfig
from samplm.base import build_sam_without_image_encoder
from samplm.cache.embeddings import EmbeddingCache
from samplm.data import load_image, read_mask_folder
from samplm.prompts.sampling import PromptSampler
from samplm.train.batch import build_batch
from samplm.train.run_setup import new_adapter
from samplm.train.settings import TrainConfig
from samplm.train.step_model import StepModel, freeze
from samplm.train.training_set import TrainingSet


def make_dataset(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = rng.integers(0, 80, (480, 640, 3), dtype=np.uint8)
        mask = np.zeros((480, 640), np.uint8)
        mask[100 + 20 * i : 300 + 20 * i, 150 + 30 * i : 450 + 30 * i] = 1
        image[mask > 0] = (200, 170, 60)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")


def timed_steps(step, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed cached steps (re-encoding: 2)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="samplm-bench-") as workdir:
        root = Path(workdir)
        make_dataset(root / "data", args.images)
        torch.manual_seed(0)
        full = sam_model_registry[args.model_type](checkpoint=None).eval()
        checkpoint = root / f"sam_{args.model_type}_random.pth"
        torch.save(full.state_dict(), checkpoint)
        data_args = [
            "--data",
            str(root / "data" / "masks"),
            "--images",
            str(root / "data" / "images"),
            "--format",
            "masks",
            "--model-type",
            args.model_type,
            "--checkpoint",
            str(checkpoint),
            "--cache",
            str(root / "cache"),
            "--device",
            args.device,
        ]
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "samplm.cli", "embed", *data_args], check=True, capture_output=True
        )
        print(f"samplm embed: {args.images} images in {time.perf_counter() - start:.1f} s")

        dataset = read_mask_folder(root / "data" / "images", root / "data" / "masks")
        cache = EmbeddingCache.for_model(root / "cache", full)
        decoder_only = freeze(build_sam_without_image_encoder(args.model_type, state_dict=full.state_dict()))
        train_set = TrainingSet(dataset, cache, decoder_only, num_points=20, progress=False)
        config = TrainConfig(batch_size=args.images)
        adapter = new_adapter(AdapterConfig(), config).to(args.device)
        optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-5)
        sampler = PromptSampler()
        rng = np.random.default_rng(0)
        decoder_only.to(args.device)

        step_model = StepModel(adapter, decoder_only, config)

        def cached_step() -> None:
            optimizer.zero_grad()
            batch = build_batch(
                train_set,
                train_set.items,
                rng,
                sampler,
                device=torch.device(args.device),
                pmm_jitter=config.pmm_jitter,
            )
            step_model(batch, train_set.cell)["loss"].backward()
            optimizer.step()

        encoder_model = freeze(copy.deepcopy(full)).to(args.device)
        transform = ResizeLongestSide(encoder_model.image_encoder.img_size)
        images = [load_image(p) for p in dataset.image_paths()]

        def reencoding_step() -> None:
            with torch.no_grad():
                for image in images:  # what a trainer without a cache pays per step
                    tensor = torch.as_tensor(transform.apply_image(image), device=args.device)
                    encoder_model.image_encoder(
                        encoder_model.preprocess(tensor.permute(2, 0, 1)[None].float())
                    )
            cached_step()

        cached_step()  # warm-up
        cached = timed_steps(cached_step, args.steps)
        reencoding = timed_steps(reencoding_step, 2)
        mc, mr = statistics.median(cached), statistics.median(reencoding)
        print(
            f"\nbatch of {args.images} instances on {args.images} images, device {args.device}, "
            f"{torch.get_num_threads()} threads"
        )
        print(f"cached step:      {1000 * mc:9.1f} ms  ({1 / mc:.2f} steps/s)")
        print(f"re-encoding step: {1000 * mr:9.1f} ms  ({1 / mr:.3f} steps/s)")
        print(f"speed-up with the cache: {mr / mc:.1f}x   target >= 20x")

        out = root / "run"
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                PEAK_RSS_WRAPPER,
                "train",
                *data_args,
                "--out",
                str(out),
                "--steps",
                "3",
                "--batch-size",
                str(args.images),
                "--val-fraction",
                "0",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        peak_kb = int(child.stdout.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
        encoder_skipped = "the image encoder is not loaded" in child.stdout
        print(
            f"\n`samplm train` from the cache: image encoder built: {'no' if encoder_skipped else 'YES'}; "
            f"peak RSS {peak_kb / 1024**2:.2f} GB   target < 3 GB"
        )


# VmHWM is this process's own peak RSS (getrusage's ru_maxrss would include the parent's at fork time).
PEAK_RSS_WRAPPER = """
import sys
from samplm.cli import main
code = main(sys.argv[1:])
peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print("PEAK_RSS_KB", peak.split()[1])
sys.exit(code)
"""


if __name__ == "__main__":
    main()
