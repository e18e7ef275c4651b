"""``samplm demo``: the whole job offline in a few CPU minutes.

data (generated banners, or a folder of real plate photos) -> embedding cache -> PLM + PMM adapter
trained on a frozen SAM with the ``fast`` recipe -> single-centre-click evaluation on held-out images
-> table, overlays, adapter directory. The base is ``samplm_lite`` unless another is named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapter.config import AdapterConfig
from .data import InstanceDataset, read_mask_folder, read_voc
from .data.synthetic import write_banner_dataset
from .data.synthetic.banners import MAX_BANNERS
from .eval import run_evaluation
from .eval.methods import SAM, SAM_F, SAM_ORACLE, plm_method, refined_method
from .eval.report import miou_table
from .train.recipes import RECIPES, recipe_config
from .train.settings import MULTIMASK_MODES, SEED_LIMIT, SETTING_LIMITS, TrainConfig
from .train.trainer import train
from .train.training_set import TrainingSet
from .utils.checks import Limit
from .utils.settings import about
from .workspace import Workspace

TASKS = ("banners", "plates")
TASK_NAMES = {"banners": "banner", "plates": "plate"}
# defaults shared by run_demo and `samplm demo`
MODEL_TYPE = "samplm_lite"
IMAGES = 300
RECIPE = "fast"
VAL_FRACTION = {"banners": 0.2, "plates": 0.5}


@dataclass
class DemoResult:
    """Headline numbers (mIoU over held-out instances, 0-1) and where the outputs are."""

    task: str
    model_type: str
    base_top: float
    base_oracle: float
    adapter: float
    samf: float | None
    refined: float | None
    adapter_dir: Path
    results: Path


_FAST = RECIPES[RECIPE]


@dataclass(frozen=True)
class DemoSettings:
    """The options of ``samplm demo``: :func:`run_demo`'s keywords with its defaults, but ``backgrounds``
    (folders of photos, not the photos) and ``device`` (``None``: a GPU if there is one)."""

    out: str = field(default="runs/demo", metadata=about("output directory (default runs/demo)"))
    task: str = field(default="banners", metadata=about("demo task (default banners)", choices=TASKS))
    data: str | None = field(
        default=None,
        metadata=about(
            "--task plates: VOC folder with annotations/ and images/ (e.g. Kaggle's car-plate set)"
        ),
    )
    model_type: str = field(
        default=MODEL_TYPE,
        metadata=about(f"{MODEL_TYPE} (default), samplm_tiny, or vit_h/vit_l/vit_b with --checkpoint"),
    )
    checkpoint: str | None = field(default=None, metadata=about("SAM checkpoint for --model-type vit_*"))
    images: int = field(
        default=IMAGES, metadata=about(f"banner images to generate (default {IMAGES})", limit=Limit(int, 1))
    )
    max_banners: int = field(
        default=MAX_BANNERS,
        metadata=about(
            f"banners per image: 1 to this many, later ones may occlude earlier ones (default {MAX_BANNERS})"
        ),
    )
    steps: int | None = field(
        default=None,
        metadata=about(f"adapter training steps (default {_FAST['steps']})", limit=SETTING_LIMITS["steps"]),
    )
    batch_size: int | None = field(
        default=None,
        metadata=about(
            f"instances per step (default {_FAST['batch_size']})", limit=SETTING_LIMITS["batch_size"]
        ),
    )
    lr: float | None = field(
        default=None, metadata=about(f"learning rate (default {_FAST['lr']})", limit=SETTING_LIMITS["lr"])
    )
    multimask: str | None = field(
        default=None,
        metadata=about(
            f"which of SAM's masks the adapter trains (default {_FAST['multimask']}; see docs/training.md)",
            choices=MULTIMASK_MODES,
        ),
    )
    seed: int = field(
        default=0, metadata=about("seed of the data, the split and training (default 0)", limit=SEED_LIMIT)
    )
    backgrounds: list[str] | None = field(
        default=None,
        metadata=about("folders of photos to paste banners on (default: procedural)", nargs="*"),
    )
    device: str | None = field(default=None, metadata=about("torch device (default: cuda if available)"))
    cache: str | None = field(default=None, metadata=about("embedding cache directory (default <out>/cache)"))


def demo_dataset(
    task: str,
    out: Path,
    *,
    data: str | os.PathLike[str] | None,
    images: int,
    max_banners: int,
    seed: int,
    backgrounds: list[Path] | None,
    progress: bool,
) -> tuple[InstanceDataset, str]:
    """The demo's instances and a description of their source.

    ``banners`` generates ``images`` banner images in ``out/data``; ``plates`` reads a Pascal VOC plate
    folder ``data`` (``annotations/*.xml`` and ``images/``, e.g. Kaggle's car-plate set), boxes as
    rectangle masks as in the paper.
    """
    if task == "banners":
        folder = write_banner_dataset(
            out / "data",
            images,
            seed=seed,
            backgrounds=backgrounds,
            max_banners=max_banners,
            progress=progress,
        )
        return read_mask_folder(folder / "images", folder / "masks"), str(folder)
    if task == "plates":
        if data is None:
            raise ValueError(
                "samplm demo --task plates needs --data: a VOC folder with annotations/ and images/"
            )
        root = Path(data)
        return read_voc(root / "annotations" if (root / "annotations").is_dir() else root), str(root)
    raise ValueError(f"unknown demo task {task!r}; choose one of {', '.join(TASKS)}")


def demo_config(seed: int, overrides: Mapping[str, Any]) -> TrainConfig:
    """The demo's training settings: the ``fast`` recipe, a log line every 10 steps, ``overrides``
    (any :class:`~samplm.train.settings.TrainConfig` field but ``seed``) and ``seed``.

    Raises:
        ValueError: an override is not a training setting, or is ``seed`` (the demo's ``seed`` also
            seeds the data and the split).
    """
    if "seed" in overrides:
        raise ValueError("give the demo's seed as seed=, not as a training setting (it also seeds the split)")
    return recipe_config(RECIPE, **{"log_every": 10, "pmm_points": 20, **overrides, "seed": seed})[1]


def _train_adapter(
    sam,
    embeddings,
    train_part,
    val_part,
    out: Path,
    *,
    name: str,
    task: str,
    model_type: str,
    config: TrainConfig,
    device: str,
    progress: bool,
):
    """The demo's adapter, trained with ``config`` (:func:`demo_config`) on the training part."""
    train_set, val_set = (
        TrainingSet(part, embeddings, sam, num_points=20, progress=progress, description=f"{split} targets")
        for part, split in ((train_part, "train"), (val_part, "val"))
    )
    return train(
        sam,
        train_set,
        out,
        config=config,
        val_set=val_set,
        device=device,
        adapter_config=AdapterConfig(task=name, metadata={"dataset": f"samplm {task} demo"}),
        model_type=model_type,
        progress=progress,
        resume=False,
    )


def run_demo(
    out: str | Path = "runs/demo",
    *,
    task: str = "banners",
    data: str | os.PathLike[str] | None = None,
    model_type: str = MODEL_TYPE,
    checkpoint: str | None = None,
    images: int = IMAGES,
    max_banners: int = MAX_BANNERS,
    val_fraction: float | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    multimask: str | None = None,
    train_settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    backgrounds: list[Path] | None = None,
    cache: str | Path | None = None,
    device: str = "cpu",
    visuals: int = 3,
    progress: bool = True,
) -> DemoResult:
    """Run the demo for ``task``; see the module docstring. Training settings left ``None`` come from
    the ``fast`` recipe; ``train_settings`` sets any other :class:`~samplm.train.settings.TrainConfig`
    field over the recipe (``steps``, ``batch_size``, ``lr`` and ``multimask`` given by name win).
    ``val_fraction`` (held-out share of images) defaults to 0.2 for banners and 0.5 for plates (the half
    of Kaggle's plate photos ``samplm_lite`` never saw in pretraining). Returns the headline numbers.

    Raises:
        ValueError: an unknown task, a missing ``data`` for plates, or a ``train_settings`` key that is
            not a training setting (or is ``seed``) or holds a value out of range.
    """
    out = Path(out)
    if val_fraction is None:
        val_fraction = VAL_FRACTION[task]
    named = {"steps": steps, "batch_size": batch_size, "lr": lr, "multimask": multimask}
    named = {k: v for k, v in named.items() if v is not None}
    train_config = demo_config(seed, {**(train_settings or {}), **named})
    dataset, source = demo_dataset(
        task,
        out,
        data=data,
        images=images,
        max_banners=max_banners,
        seed=seed,
        backgrounds=backgrounds,
        progress=progress,
    )
    train_part, val_part = dataset.split(val_fraction, seed=seed)
    workspace = Workspace(
        model_type, checkpoint, cache_dir=cache or out / "cache", device=device, verbose=progress
    )
    sam, embeddings = workspace.embed([dataset])
    name = TASK_NAMES[task]
    trained = _train_adapter(
        sam,
        embeddings,
        train_part,
        val_part,
        out / "train",
        name=name,
        task=task,
        model_type=model_type,
        config=train_config,
        device=device,
        progress=progress,
    )
    config = {"data": source, "format": "masks" if task == "banners" else "voc", "model_type": model_type}
    result = run_evaluation(
        sam,
        val_part,
        embeddings,
        out / "eval",
        adapters={name: trained.adapter},
        samf_data=train_part,
        sensitivity=2,
        base=model_type,
        **{"visuals": visuals, "device": device, "progress": progress, "config": config},
    )
    return _demo_result(task, model_type, name, result, trained.adapter_dir, out / "eval" / "results.md")


def _demo_result(
    task: str, model_type: str, name: str, result, adapter_dir: Path, results: Path
) -> DemoResult:
    """The headline numbers of an evaluation (mIoU over all instances)."""
    miou = {m: v["all"] for m, v in result.miou.items()}
    return DemoResult(
        task=task,
        model_type=model_type,
        base_top=miou[SAM],
        base_oracle=miou[SAM_ORACLE],
        adapter=miou[plm_method(name)],
        samf=miou.get(SAM_F),
        refined=miou.get(refined_method(name)),
        adapter_dir=adapter_dir,
        results=results,
    )


def format_demo(result: DemoResult) -> str:
    """The table printed by ``samplm demo`` (mIoU in percent over held-out instances)."""
    base, name = result.model_type, TASK_NAMES[result.task]
    rows = [(SAM.label(base), result.base_top), (SAM_ORACLE.label(base), result.base_oracle)]
    if result.samf is not None:
        rows.append((SAM_F.label(base), result.samf))
    rows.append((plm_method(name).label(base), result.adapter))
    if result.refined is not None:
        rows.append((refined_method(name).label(base), result.refined))
    lines = ["", f"base: {base}", "", miou_table(rows)]
    lines += [
        "",
        f"adapter: {result.adapter_dir}",
        f"report, overlays and sensitivity maps: {result.results.parent}",
        "",
        "use it:",
        "    from samplm import CustomSamPredictor",
        "    from samplm.base import build_sam",
        f'    predictor = CustomSamPredictor(build_sam("{result.model_type}"))',
        f'    predictor.load_adapter("{result.adapter_dir}")',
        "    predictor.set_image(image)  # H x W x 3 uint8 RGB",
        "    masks, scores, logits = predictor.predict(point_coords=[[x, y]], point_labels=[1])",
    ]
    return "\n".join(lines)
