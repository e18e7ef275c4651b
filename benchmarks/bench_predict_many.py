"""One click answered by many adapters: ``predict_many`` (one batched decoder call) against a loop of
``set_adapter`` + ``predict``, in one run, on ViT-B (random weights: only the time matters) and on
``samplm_lite``.

    python benchmarks/bench_predict_many.py --adapters 18 --repeats 5

Prints, per base: milliseconds per click for the loop and for ``predict_many``, their ratio (target:
batched >= 5x faster), and the largest difference between the two (low-res logits, scores) and the
share of mask pixels on which they agree.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from segment_anything import sam_model_registry

from samplm import AdapterConfig, CustomSamPredictor, PromptAdapter
from samplm.base import build_sam


def predictor_with_adapters(sam, count: int, seed: int = 0) -> CustomSamPredictor:
    """A predictor on ``sam`` with ``count`` adapters whose weights are randomly perturbed (a fresh
    adapter is an exact identity) and a random image embedding of a 512 x 512 photo."""
    predictor = CustomSamPredictor(sam.eval())
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        adapter = PromptAdapter(AdapterConfig(task=f"part{index:02d}"))
        with torch.no_grad():
            for parameter in adapter.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        predictor.load_adapter(adapter)
    h, w = sam.prompt_encoder.image_embedding_size
    embedding = torch.randn(1, sam.prompt_encoder.embed_dim, h, w, generator=generator)
    predictor.set_embedding(embedding, (512, 512))
    return predictor


def compare(predictor: CustomSamPredictor, repeats: int) -> dict[str, float]:
    """Times (ms per click) and agreement of the loop and of ``predict_many`` on one centre click."""
    click = {"point_coords": np.array([[256.0, 256.0]]), "point_labels": np.array([1])}
    names = predictor.adapters

    def loop() -> dict[str, tuple]:
        out = {}
        for name in names:
            predictor.set_adapter(name)
            out[name] = predictor.predict(**click)
        return out

    loop(), predictor.predict_many(names, **click)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        looped = loop()
    loop_ms = 1000 * (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        batched = predictor.predict_many(names, **click)
    batch_ms = 1000 * (time.perf_counter() - start) / repeats
    return {
        "loop_ms": loop_ms,
        "batched_ms": batch_ms,
        "ratio": loop_ms / batch_ms,
        "max_logit_diff": max(float(np.abs(batched[n][2] - looped[n][2]).max()) for n in names),
        "max_score_diff": max(float(np.abs(batched[n][1] - looped[n][1]).max()) for n in names),
        "mask_agreement": float(np.mean([(batched[n][0] == looped[n][0]).mean() for n in names])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--adapters", type=int, default=18)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bases = {"vit_b (random weights)": sam_model_registry["vit_b"](), "samplm_lite": build_sam("samplm_lite")}
    for label, sam in bases.items():
        row = compare(predictor_with_adapters(sam, args.adapters), args.repeats)
        verdict = "ok" if row["ratio"] >= 5 else "MISSED"
        print(
            f"{label}: {args.adapters} adapters x 1 click: loop {row['loop_ms']:.1f} ms, predict_many "
            f"{row['batched_ms']:.1f} ms, ratio {row['ratio']:.2f} (target >= 5: {verdict}); max logit "
            f"difference {row['max_logit_diff']:.2e}, max score difference {row['max_score_diff']:.2e}, "
            f"masks agree on {100 * row['mask_agreement']:.4f} % of pixels"
        )
    print(f"torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
