"""Cost of an active adapter per click on each base, as a ratio to the plain upstream model.

For each base, the plain upstream predictor (or model) and samplm's adapter version share one model with
random weights (timings do not depend on the weight values) and one image, encoded before timing; each
click of one seeded click set is then answered by both, interleaved (the order alternates), many times,
and the medians are compared:

- ``sam``: ``segment_anything.SamPredictor.predict`` vs ``samplm.CustomSamPredictor.predict`` on ``vit_b``
  (``--sam-model-type``);
- ``sam2``: ``SAM2ImagePredictor.predict`` vs ``samplm.CustomSam2Predictor.predict`` on
  ``sam2.1_hiera_tiny`` (``--sam2-model-type``);
- ``hf``: transformers' ``SamModel(SamConfig())`` (ViT-B sizes) and ``Sam2Model(Sam2Config())`` (Hiera
  tiny) called with ``image_embeddings=`` vs ``samplm.hf.SamAdapterModel`` around the same model.

The adapter is a ``PromptAdapter`` whose PLM weights carry seeded noise (so nothing in it is zero, as
after training), bound to the base. One click, multimask output. A second table splits the adapter's
own work: its per-image context (the PLM's keys and values of the image) and its per-click part (the PLM
on the prompt tokens, then its adjustment of the decoder's outputs). Target: ratio <= 1.10::

    python benchmarks/bases_overhead.py                      # all three families, CPU
    python benchmarks/bases_overhead.py --bases sam2 --sam2-model-type sam2.1_hiera_small
    python benchmarks/bases_overhead.py --quick              # smoke check: 2 clicks, 3 repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from samplm import AdapterConfig, PromptAdapter

TARGET = 1.10
BASES = ("sam", "sam2", "hf")
IMAGE_HW = (480, 640)
MODEL_FRAME = 1024  # the input square of every base here


@dataclass
class Case:
    """One base: the plain and the adapter call of one click (``x, y`` in the image's pixels), and the
    adapter's own parts for the breakdown (each a call without arguments)."""

    name: str
    plain: Callable[[float, float], object]
    adapter: Callable[[float, float], object]
    plm_context: Callable[[], object]
    plm_click: Callable[[], object]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def trained_like_adapter(model: Any, task: str, seed: int, model_type: str | None = None) -> PromptAdapter:
    """A fresh adapter with seeded noise added to every PLM weight, bound to ``model``."""
    adapter = PromptAdapter(AdapterConfig(task=task))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter.plm.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    adapter.bind_base_model(model, model_type=model_type)
    return adapter


def plm_parts(
    plm: Any, embedding: torch.Tensor, image_pe: torch.Tensor, n_tokens: int
) -> tuple[Callable[[], object], Callable[[], object]]:
    """The PLM's per-image context, and its per-click work on ``n_tokens`` prompt tokens: the token
    offset from that context and the adjustment of the three outputs (256 x 256 logits, scored on
    ``embedding``)."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, n_tokens, plm.embed_dim, generator=generator)
    logits = torch.randn(1, 3, 256, 256, generator=generator)
    iou = torch.rand(1, 3, generator=generator)
    context = plm.image_context(embedding, image_pe)

    def click() -> None:
        plm(tokens, context=context)
        plm.adjust_outputs(logits, iou, True, embedding)

    return (lambda: plm.image_context(embedding, image_pe)), click


def sam_case(args: argparse.Namespace, image: np.ndarray) -> Case:
    from segment_anything import SamPredictor, sam_model_registry

    from samplm import CustomSamPredictor

    torch.manual_seed(0)
    sam = sam_model_registry[args.sam_model_type]().eval()
    plain, custom = SamPredictor(sam), CustomSamPredictor(sam)
    seconds = timed(lambda: plain.set_image(image))
    print(f"  sam: {args.sam_model_type} set_image {seconds:.1f} s (once; the adapter side reuses it)")
    custom.set_embedding(plain.get_image_embedding(), plain.original_size, plain.input_size)
    custom.load_adapter(trained_like_adapter(sam, "task", 1, args.sam_model_type))
    plm = custom.get_adapter("task").plm
    context, click = plm_parts(plm, custom.features, sam.prompt_encoder.get_dense_pe(), 2)
    label = np.array([1])
    return Case(
        f"SAM 1 `{args.sam_model_type}`: `SamPredictor` / `CustomSamPredictor`",
        lambda x, y: plain.predict(np.array([[x, y]]), label),
        lambda x, y: custom.predict(np.array([[x, y]]), label),
        context,
        click,
    )


def sam2_case(args: argparse.Namespace, image: np.ndarray) -> Case:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from samplm import CustomSam2Predictor
    from samplm.base.meta_sam2 import build_sam2_model

    torch.manual_seed(0)
    model = build_sam2_model(args.sam2_model_type)
    plain, custom = SAM2ImagePredictor(model), CustomSam2Predictor(model)
    seconds = timed(lambda: plain.set_image(image))
    custom.set_image(image)
    print(f"  sam2: {args.sam2_model_type} set_image {seconds:.1f} s (on each predictor)")
    custom.load_adapter(trained_like_adapter(model, "task", 1, args.sam2_model_type))
    plm = custom.get_adapter("task").plm
    embedding = custom.image_features().embedding
    context, click = plm_parts(plm, embedding, model.sam_prompt_encoder.get_dense_pe(), 2)
    label = np.array([1])
    return Case(
        f"SAM 2.1 `{args.sam2_model_type}`: `SAM2ImagePredictor` / `CustomSam2Predictor`",
        lambda x, y: plain.predict(np.array([[x, y]]), label),
        lambda x, y: custom.predict(np.array([[x, y]]), label),
        context,
        click,
    )


def hf_case(kind: str, image: np.ndarray) -> Case:
    """transformers' ``SamModel`` (``kind="sam"``) or ``Sam2Model`` (``"sam2"``), random, default config."""
    import transformers

    from samplm.hf import SamAdapterModel

    torch.manual_seed(0)
    if kind == "sam":
        model = transformers.SamModel(transformers.SamConfig()).eval()
        pixels = transformers.SamImageProcessor()(image, return_tensors="pt")["pixel_values"]
        scale = np.array([MODEL_FRAME / max(IMAGE_HW)] * 2)  # longest side to 1024, padded
        title = "transformers `SamModel(SamConfig())` / `SamAdapterModel`"
    else:
        model = transformers.Sam2Model(transformers.Sam2Config()).eval()
        pixels = transformers.Sam2ImageProcessor()(image, return_tensors="pt")["pixel_values"]
        scale = np.array([MODEL_FRAME / IMAGE_HW[1], MODEL_FRAME / IMAGE_HW[0]])  # stretched to 1024
        title = "transformers `Sam2Model(Sam2Config())` / `SamAdapterModel`"
    wrapped = SamAdapterModel(model)
    with torch.no_grad():
        start = time.perf_counter()
        embeddings = model.get_image_embeddings(pixels)
        print(f"  hf {kind}: get_image_embeddings {time.perf_counter() - start:.1f} s (once, shared)")
    wrapped.load_adapter(trained_like_adapter(wrapped, "task", 1))
    plm = wrapped.get_adapter("task").plm
    embedding = embeddings if kind == "sam" else embeddings[-1]
    context, click = plm_parts(plm, embedding, model.get_image_wide_positional_embeddings(), 2)
    labels = torch.ones(1, 1, 1, dtype=torch.long)

    def call(target: torch.nn.Module) -> Callable[[float, float], object]:
        def run(x: float, y: float) -> object:
            points = torch.tensor([[[[x * scale[0], y * scale[1]]]]], dtype=torch.float32)
            with torch.no_grad():
                return target(image_embeddings=embeddings, input_points=points, input_labels=labels)

        return run

    return Case(title, call(model), call(wrapped), context, click)


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def measure(case: Case, clicks: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median seconds per click of the plain and the adapter call, interleaved (order alternating)."""
    for x, y in clicks:  # warm-up, and the adapter's per-image context
        case.plain(x, y), case.adapter(x, y)
    plain, adapter = [], []
    for rep in range(repeats):
        for i, (x, y) in enumerate(clicks):
            if (rep + i) % 2:
                adapter.append(timed(lambda x=x, y=y: case.adapter(x, y)))
                plain.append(timed(lambda x=x, y=y: case.plain(x, y)))
            else:
                plain.append(timed(lambda x=x, y=y: case.plain(x, y)))
                adapter.append(timed(lambda x=x, y=y: case.adapter(x, y)))
    return median_ms(plain), median_ms(adapter)


def parts(case: Case, repeats: int) -> tuple[float, float]:
    """Median ms of the PLM's per-image context and of its per-click work."""
    with torch.no_grad():
        context = [timed(case.plm_context) for _ in range(repeats)]
        click = [timed(case.plm_click) for _ in range(repeats)]
    return median_ms(context), median_ms(click)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bases", default=",".join(BASES), help="comma-separated: sam, sam2, hf")
    parser.add_argument("--clicks", type=int, default=8, help="clicks in the seeded click set")
    parser.add_argument("--repeats", type=int, default=25, help="passes over the click set")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--sam-model-type", default="vit_b", choices=("vit_b", "vit_l", "vit_h"))
    parser.add_argument("--sam2-model-type", default="sam2.1_hiera_tiny")
    parser.add_argument("--quick", action="store_true", help="smoke check: 2 clicks, 3 repeats")
    args = parser.parse_args()
    bases = [b.strip() for b in args.bases.split(",") if b.strip()]
    unknown = sorted(set(bases) - set(BASES))
    if unknown:
        parser.error(f"unknown bases {unknown}; choose from {', '.join(BASES)}")
    if args.quick:
        args.clicks, args.repeats = 2, 3
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # sam2's SAM2Transforms scripts its resize with torch.jit.script, which torch now warns about
    warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(*IMAGE_HW, 3), dtype=np.uint8)
    clicks = np.stack(
        [rng.uniform(0.1, 0.9, args.clicks) * IMAGE_HW[1], rng.uniform(0.1, 0.9, args.clicks) * IMAGE_HW[0]],
        axis=1,
    )
    print(
        f"threads {torch.get_num_threads()}, image {IMAGE_HW[0]} x {IMAGE_HW[1]}, {args.clicks} clicks x "
        f"{args.repeats} repeats, one positive click, multimask; random weights, CPU"
    )
    builders: dict[str, Callable[[], list[Case]]] = {
        "sam": lambda: [sam_case(args, image)],
        "sam2": lambda: [sam2_case(args, image)],
        "hf": lambda: [hf_case("sam", image), hf_case("sam2", image)],
    }
    rows, split = [], []
    for base in bases:
        for case in builders[base]():
            plain, adapter = measure(case, clicks, args.repeats)
            rows.append((case.name, plain, adapter))
            split.append((case.name, *parts(case, args.repeats * args.clicks)))
            print(f"  {case.name}: {plain:.2f} / {adapter:.2f} ms per click")

    print("\n| base | plain ms/click | adapter ms/click | ratio | target |")
    print("|---|---|---|---|---|")
    for name, plain, adapter in rows:
        ratio = adapter / plain
        verdict = "ok" if ratio <= TARGET else "MISSED"
        print(f"| {name} | {plain:.2f} | {adapter:.2f} | **{ratio:.3f}** | <= {TARGET:.2f} ({verdict}) |")
    print("\n| base | PLM per-image context ms | PLM per-click ms |")
    print("|---|---|---|")
    for name, context, click in split:
        print(f"| {name} | {context:.2f} | {click:.2f} |")


if __name__ == "__main__":
    main()
