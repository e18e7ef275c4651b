"""Per-prompt cost of an active adapter vs plain ``SamPredictor``, and adapter load/switch times.

Measured in one run, interleaved, so machine noise affects both sides alike. SAM ``vit_b``
architecture with random weights (timings do not depend on the weight values), CPU by default::

    python benchmarks/bench_predict.py                 # vit_b, CPU
    python benchmarks/bench_predict.py --repeats 100 --device cuda

Targets: predict ratio <= 1.10, cold ``load_adapter`` from disk < 50 ms, warm ``set_adapter`` < 1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry

from samplm import AdapterConfig, CustomSamPredictor, PromptAdapter


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def trained_like_adapter(task: str, seed: int) -> PromptAdapter:
    generator = torch.Generator().manual_seed(seed)
    adapter = PromptAdapter(AdapterConfig(task=task))
    with torch.no_grad():
        for param in adapter.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return adapter


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16, help="prompts per predict_torch call")
    args = parser.parse_args()

    torch.manual_seed(0)
    sam = sam_model_registry[args.model_type](checkpoint=None).to(args.device).eval()
    image = np.random.default_rng(0).integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    plain, custom = SamPredictor(sam), CustomSamPredictor(sam)
    print(
        f"model {args.model_type} (random weights), device {args.device}, threads {torch.get_num_threads()}"
    )
    print(f"set_image (image encoder): {timed(lambda: plain.set_image(image)):.2f} s")
    custom.set_image(image)

    with tempfile.TemporaryDirectory() as workdir:
        paths = []
        for i in range(6):
            paths.append(Path(workdir) / f"task{i}")
            trained_like_adapter(f"task{i}", i).save_pretrained(paths[-1])
        first_load = timed(lambda: custom.load_adapter(paths[0]))
        later_loads = [timed(lambda p=p: custom.load_adapter(p)) for p in paths[1:]]
    custom.set_adapter("task0")
    names = custom.adapters
    cycle = [names[i % len(names)] for i in range(2000)]
    switch = [timed(lambda n=name: custom.set_adapter(n)) for name in cycle]
    custom.set_adapter("task0")

    click = {"point_coords": np.array([[320.0, 240.0]]), "point_labels": np.array([1])}
    first_predict = timed(lambda: custom.predict(**click))  # builds the per-image PLM cache
    coords = torch.tensor([[[64.0 + 30 * i, 48.0 + 20 * i]] for i in range(args.batch)], device=args.device)
    coords = plain.transform.apply_coords_torch(coords, plain.original_size)
    labels = torch.ones(args.batch, 1, dtype=torch.int, device=args.device)

    cases = {
        "predict, 1 click, multimask": (
            lambda: plain.predict(**click),
            lambda: custom.predict(**click),
        ),
        f"predict_torch, {args.batch} clicks": (
            lambda: plain.predict_torch(coords, labels),
            lambda: custom.predict_torch(coords, labels),
        ),
    }
    print(
        f"\nload_adapter from disk: first {1000 * first_load:.1f} ms (includes hashing SAM's decoder once),"
        f" then median {1000 * statistics.median(later_loads):.1f} ms   target < 50 ms"
    )
    print(f"set_adapter (warm): median {1e6 * statistics.median(switch):.2f} us   target < 1 ms")
    print(
        "first predict on a new image with an adapter (builds its per-image cache): "
        f"{1000 * first_predict:.1f} ms"
    )
    print(f"\n{'case':34} {'SamPredictor':>14} {'Custom+adapter':>15} {'ratio':>7}")
    for name, (run_plain, run_custom) in cases.items():
        for _ in range(3):
            run_plain(), run_custom()
        t_plain, t_custom = [], []
        for _ in range(args.repeats):
            t_plain.append(timed(run_plain))
            t_custom.append(timed(run_custom))
        mp, mc = statistics.median(t_plain), statistics.median(t_custom)
        print(f"{name:34} {1000 * mp:11.2f} ms {1000 * mc:12.2f} ms {mc / mp:7.3f}   target <= 1.10")


if __name__ == "__main__":
    main()
