"""Hot-swap several adapters on one SAM without re-encoding the image.

Runs on CPU in seconds with samplm_tiny (real 256-wide prompt encoder and mask decoder, small image
encoder). The two adapters here carry random weights, standing in for trained ones: the point is the
mechanics (save, load by path, switch, disable). Use a real SAM with ``--checkpoint``::

    python examples/hot_swap.py
    python examples/hot_swap.py --model-type vit_h --checkpoint sam_vit_h_4b8939.pth
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from samplm import AdapterConfig, CustomSamPredictor, PromptAdapter
from samplm.base import build_sam_tiny


def random_adapter(task: str, seed: int) -> PromptAdapter:
    """An adapter with random weights (a stand-in for a trained one)."""
    generator = torch.Generator().manual_seed(seed)
    adapter = PromptAdapter(AdapterConfig(task=task))
    with torch.no_grad():
        for param in adapter.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        adapter.plm.norm_out.weight.fill_(1.0)
    return adapter


def synthetic_image(height: int = 240, width: int = 320) -> np.ndarray:
    """A banner-like scene: a coloured rectangle with stripes on a noisy background (HWC uint8)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    image[60:180, 60:260] = (220, 200, 40)
    image[90:150:12, 80:240] = (20, 20, 160)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-type", default=None, help="segment_anything registry key (vit_h, vit_b, ...)"
    )
    parser.add_argument("--checkpoint", default=None, help="SAM checkpoint for --model-type")
    args = parser.parse_args()

    if args.model_type:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[args.model_type](checkpoint=args.checkpoint)
    else:
        sam = build_sam_tiny()
    sam.eval()

    with tempfile.TemporaryDirectory() as workdir:
        for task, seed in (("banner", 1), ("text", 2)):
            random_adapter(task, seed).save_pretrained(Path(workdir) / task)

        predictor = CustomSamPredictor(sam)
        for task in ("banner", "text"):
            start = time.perf_counter()
            name = predictor.load_adapter(Path(workdir) / task)
            print(f"loaded adapter {name!r} from disk in {1000 * (time.perf_counter() - start):.1f} ms")

        image = synthetic_image()
        predictor.set_image(image)  # the image encoder runs once, here
        click = {"point_coords": np.array([[160.0, 120.0]]), "point_labels": np.array([1])}

        for name in ("banner", "text"):
            start = time.perf_counter()
            predictor.set_adapter(name)
            switch_ms = 1000 * (time.perf_counter() - start)
            masks, scores, _ = predictor.predict(**click)
            best = int(np.argmax(scores))
            print(
                f"adapter {name!r:9} switch {switch_ms:.3f} ms | best mask {best} "
                f"area {int(masks[best].sum())} px, score {scores[best]:.3f}"
            )
        with predictor.disable_adapter():
            masks, scores, _ = predictor.predict(**click)
            best = int(np.argmax(scores))
            print(
                f"plain SAM           | best mask {best} area {int(masks[best].sum())} px, "
                f"score {scores[best]:.3f}"
            )
        print(f"adapters loaded: {predictor.adapters}, active: {predictor.active_adapter!r}")


if __name__ == "__main__":
    main()
