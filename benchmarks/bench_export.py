"""The exported ONNX decoder against PyTorch, in one run: latency per click, parity, quantisation.

    python benchmarks/bench_export.py --model-type samplm_lite --clicks 50

Exports the base's decoder with an adapter inside (weights randomly perturbed: a fresh adapter is an
identity) at fp32 and with onnxruntime's dynamic quantisation, then on a 512 x 512 photo (``--image``;
default a random embedding) clicks ``--clicks`` random points and prints: ms per click for
``CustomSamPredictor.predict`` and for onnxruntime (fp32, quantised), the largest logit difference
and the worst thresholded-mask IoU of ONNX fp32 vs PyTorch (targets: ONNX latency <= PyTorch's;
IoU >= 0.99), the quantised file's size against fp32 (target <= 1/3) and its mask IoU against fp32
(mean over masks: target >= 0.97; worst).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
import torch

from samplm import AdapterConfig, CustomSamPredictor, PromptAdapter
from samplm.base import build_sam
from samplm.data.images import load_image
from samplm.export.onnx import export_onnx


def perturbed_adapter(seed: int = 0) -> PromptAdapter:
    adapter = PromptAdapter(AdapterConfig(task="timing"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return adapter


def onnx_inputs(predictor: CustomSamPredictor, point: np.ndarray) -> dict[str, np.ndarray]:
    """SamOnnxModel's inputs for one click (with SAM's padding point) on the predictor's image."""
    h, w = predictor.model.prompt_encoder.image_embedding_size
    coords = np.concatenate([point, [[0.0, 0.0]]])[None].astype(np.float32)
    return {
        "image_embeddings": predictor.features.numpy(),
        "point_coords": predictor.transform.apply_coords(coords, predictor.original_size).astype(np.float32),
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, 4 * h, 4 * w), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array(predictor.original_size, np.float32),
    }


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def measure(predictor: CustomSamPredictor, sessions: dict, points: np.ndarray) -> tuple:
    """Seconds per backend (the first click not counted), the largest fp32-vs-PyTorch logit difference,
    the worst mask IoUs (fp32 vs PyTorch, int8 vs fp32) and every int8-vs-fp32 mask IoU."""
    times = {"torch": 0.0, "fp32": 0.0, "int8": 0.0}
    worst = {"fp32": 1.0, "int8": 1.0}
    int8_ious = []
    max_diff = 0.0
    for index, point in enumerate(points):
        start = time.perf_counter()
        masks, _, _ = predictor.predict(point_coords=point, point_labels=[1], return_logits=True)
        spent = {"torch": time.perf_counter() - start}
        outputs = {}
        for name, session in sessions.items():
            start = time.perf_counter()
            outputs[name] = session.run(None, onnx_inputs(predictor, point))[0][0, 1:]
            spent[name] = time.perf_counter() - start
        for name in times:
            times[name] += spent[name] if index else 0.0
        max_diff = max(max_diff, float(np.abs(outputs["fp32"] - masks).max()))
        worst["fp32"] = min([worst["fp32"], *(iou(outputs["fp32"][i] > 0, masks[i] > 0) for i in range(3))])
        pairs = [iou(outputs["int8"][i] > 0, outputs["fp32"][i] > 0) for i in range(3)]
        worst["int8"] = min([worst["int8"], *pairs])
        int8_ious += pairs
    return times, max_diff, worst, int8_ious


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-type", default="samplm_lite")
    parser.add_argument("--clicks", type=int, default=50)
    parser.add_argument("--image", help="a photo to click on (default: a random embedding)")
    args = parser.parse_args()
    sam = build_sam(args.model_type).eval()
    adapter = perturbed_adapter()
    predictor = CustomSamPredictor(sam)
    predictor.load_adapter(adapter)
    folder = Path(tempfile.mkdtemp(prefix="samplm-bench-export-"))
    fp32 = export_onnx(sam, folder / "fp32.onnx", adapter=adapter, model_type=args.model_type)
    int8 = export_onnx(sam, folder / "int8.onnx", adapter=adapter, model_type=args.model_type, quantize=True)
    sessions = {
        name: onnxruntime.InferenceSession(str(path)) for name, path in (("fp32", fp32), ("int8", int8))
    }
    rng = np.random.default_rng(0)
    h, w = sam.prompt_encoder.image_embedding_size
    if args.image:  # a real photo, resized to 512 x 512
        predictor.set_image(cv2.resize(load_image(args.image), (512, 512)))
    else:
        predictor.set_embedding(
            torch.randn(1, 256, h, w, generator=torch.Generator().manual_seed(0)), (512, 512)
        )
    points = rng.uniform(20, 492, (args.clicks + 1, 1, 2))  # the first click warms up, not counted
    times, max_diff, worst, int8_ious = measure(predictor, sessions, points)
    ms = {name: 1000 * value / args.clicks for name, value in times.items()}
    size = int8.stat().st_size / fp32.stat().st_size
    print(f"base {args.model_type}, {args.clicks} clicks, torch threads {torch.get_num_threads()}")
    print(
        f"ms per click: PyTorch {ms['torch']:.2f}, ONNX fp32 {ms['fp32']:.2f}, ONNX int8 {ms['int8']:.2f}; "
        f"ONNX fp32 / PyTorch {ms['fp32'] / ms['torch']:.2f} "
        f"(target <= 1: {_verdict(ms['fp32'] <= ms['torch'])})"
    )
    print(
        f"parity fp32 vs PyTorch: max logit difference {max_diff:.2e}, worst mask IoU {worst['fp32']:.4f} "
        f"(target >= 0.99: {_verdict(worst['fp32'] >= 0.99)})"
    )
    mib = fp32.stat().st_size / 2**20, int8.stat().st_size / 2**20
    print(
        f"int8: {mib[0]:.1f} MiB -> {mib[1]:.1f} MiB ({size:.2f} of fp32, target <= 0.33: "
        f"{_verdict(size <= 1 / 3)}); mask IoU vs fp32: mean {np.mean(int8_ious):.4f} "
        f"(target >= 0.97: {_verdict(np.mean(int8_ious) >= 0.97)}), worst {worst['int8']:.4f}"
    )


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


if __name__ == "__main__":
    main()
