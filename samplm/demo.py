"""``samplm demo``: the whole job offline in a few CPU minutes.

banner images (generated) -> embedding cache -> PLM + PMM adapter trained on a frozen SAM ->
single-centre-click evaluation on held-out images -> table, overlays, adapter directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .cache import EmbeddingCache
from .config import AdapterConfig
from .data import read_mask_folder
from .data.synthetic import write_banner_dataset
from .data.synthetic.banners import MAX_BANNERS
from .eval import run_evaluation
from .eval.protocol import SAM, SAM_F, SAM_ORACLE, plm_method, refined_method
from .models import build_sam
from .train.config import TrainConfig
from .train.trainer import train
from .train.trainset import TrainingSet

TASK = "banner"
# defaults shared by run_demo and `samplm demo`
IMAGES = 300
STEPS = 800
BATCH_SIZE = 8
LR = 3e-3
MULTIMASK = "all"


@dataclass
class DemoResult:
    """Headline numbers (mIoU over held-out banners, 0-1) and where the outputs are."""

    base_top: float
    base_oracle: float
    adapter: float
    samf: float | None
    refined: float | None
    adapter_dir: Path
    results: Path


def run_demo(
    out: str | Path = "runs/demo",
    *,
    model_type: str = "samplm_tiny",
    checkpoint: str | None = None,
    images: int = IMAGES,
    max_banners: int = MAX_BANNERS,
    val_fraction: float = 0.2,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    lr: float = LR,
    multimask: str = MULTIMASK,
    seed: int = 0,
    backgrounds: list[Path] | None = None,
    cache: str | Path | None = None,
    device: str = "cpu",
    visuals: int = 3,
    progress: bool = True,
) -> DemoResult:
    """Run the banner demo; see the module docstring. Returns the headline numbers."""
    out = Path(out)
    data_dir = write_banner_dataset(
        out / "data", images, seed=seed, backgrounds=backgrounds, max_banners=max_banners, progress=progress
    )
    dataset = read_mask_folder(data_dir / "images", data_dir / "masks")
    train_part, val_part = dataset.split(val_fraction, seed=seed)
    sam = build_sam(model_type, checkpoint)
    embeddings = EmbeddingCache.for_model(cache or out / "cache", sam)
    embeddings.build(sam, dataset.image_paths(), device=device, progress=progress)
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        multimask=multimask,
        warmup_steps=max(1, steps // 10),
        val_every=max(1, steps // 4),
        checkpoint_every=steps,
        log_every=10,
        seed=seed,
        pmm_points=20,
    )
    train_set = TrainingSet(
        train_part, embeddings, sam, num_points=20, progress=progress, description="train targets"
    )
    val_set = TrainingSet(
        val_part, embeddings, sam, num_points=20, progress=progress, description="val targets"
    )
    trained = train(
        sam,
        train_set,
        out / "train",
        config=config,
        val_set=val_set,
        device=device,
        adapter_config=AdapterConfig(task=TASK, metadata={"dataset": "samplm banner demo"}),
        model_type=model_type,
        progress=progress,
        resume=False,
    )
    result = run_evaluation(
        sam,
        val_part,
        embeddings,
        out / "eval",
        adapters={TASK: trained.adapter},
        samf_data=train_part,
        visuals=visuals,
        sensitivity=2,
        config={"data": str(data_dir), "format": "masks", "model_type": model_type},
        device=device,
        progress=progress,
    )
    miou = {m: v["all"] for m, v in result.miou.items()}
    return DemoResult(
        base_top=miou[SAM],
        base_oracle=miou[SAM_ORACLE],
        adapter=miou[plm_method(TASK)],
        samf=miou.get(SAM_F),
        refined=miou.get(refined_method(TASK)),
        adapter_dir=trained.adapter_dir,
        results=out / "eval" / "results.md",
    )


def format_demo(result: DemoResult) -> str:
    """The table printed by ``samplm demo`` (mIoU in percent over held-out banners)."""
    rows = [("SAM, most confident mask", result.base_top), ("SAM, oracle (best of 3)", result.base_oracle)]
    if result.samf is not None:
        rows.append(("SAM-F", result.samf))
    rows.append(("SAM + banner adapter (PLM)", result.adapter))
    if result.refined is not None:
        rows.append(("SAM + adapter + PMM refine", result.refined))
    lines = ["", "| method (single centre click) | mIoU |", "|---|---|"]
    lines += [f"| {name} | {100 * value:.2f} |" for name, value in rows]
    lines += [
        "",
        f"adapter: {result.adapter_dir}",
        f"report, overlays and sensitivity maps: {result.results.parent}",
        "",
        "use it:",
        "    from samplm import CustomSamPredictor",
        "    from samplm.models import build_sam_tiny",
        "    predictor = CustomSamPredictor(build_sam_tiny())",
        f'    predictor.load_adapter("{result.adapter_dir}")',
        "    predictor.set_image(image)  # H x W x 3 uint8 RGB",
        "    masks, scores, logits = predictor.predict(point_coords=[[x, y]], point_labels=[1])",
    ]
    return "\n".join(lines)
