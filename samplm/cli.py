"""The ``samplm`` command: ``embed``, ``train`` and ``push``.

Input errors print one line (``samplm: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import SamplmError
from .train.config import MULTIMASK_MODES
from .train.recipes import RECIPE_CHOICES, RECIPES, recipe_config

DEFAULT_CACHE = "~/.cache/samplm/embeddings"

_EPILOG_TRAIN = """\
examples:
  samplm train --data plates/annotations --format voc --model-type samplm_lite --out runs/plates
  samplm train --data plates/annotations --format voc --model-type vit_h \\
      --checkpoint sam_vit_h_4b8939.pth --out runs/plates --recipe paper
  samplm train --config plates.yaml --lr 1e-4        # flags override the config file

The config file (YAML or JSON) may set any flag (use the long name with _ for -, e.g. batch_size)
and any training setting (e.g. warmup_steps, center_power, box_probability, precision).
Outputs in --out: adapter/ (best adapter), checkpoints/last.pt, metrics.jsonl, train_config.json.
"""


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data", help="annotations: COCO JSON, VOC XML folder, mask folder, or CelebAMask-HQ root"
    )
    group.add_argument("--format", choices=["coco", "voc", "masks", "celebamask"], help="annotation format")
    group.add_argument(
        "--images", help="images folder (default: next to the annotations; required for masks)"
    )
    group.add_argument("--category", nargs="+", help="category / part name(s) to learn (default: all)")
    group.add_argument(
        "--strict-data", action="store_true", default=None, help="fail on the first bad annotation"
    )


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model-type",
        help="vit_h, vit_l, vit_b (with --checkpoint), or the built-in samplm_lite or samplm_tiny",
    )
    group.add_argument("--checkpoint", help="SAM checkpoint (.pth or .safetensors); required for vit_*")
    group.add_argument("--cache", help=f"embedding cache directory (default {DEFAULT_CACHE})")
    group.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")


def build_parser() -> argparse.ArgumentParser:
    from . import demo as demo_defaults
    from .data.synthetic.banners import MAX_BANNERS

    parser = argparse.ArgumentParser(
        prog="samplm",
        description="Customize a frozen Segment Anything Model to your task with prompt-learning adapters.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    embed = sub.add_parser(
        "embed",
        help="encode every image of a dataset once and cache the embeddings (resumable)",
        description="Run SAM's image encoder once per image and store the embeddings (float16). "
        "Interrupted runs resume where they stopped. Training then reads only the cache.",
    )
    _add_data_args(embed)
    _add_model_args(embed)
    embed.add_argument("--config", help="YAML/JSON file with any of these options")

    train = sub.add_parser(
        "train",
        help="train an adapter (PLM + PMM) on your annotations",
        description="Train a prompt-learning adapter on a frozen SAM from cached embeddings "
        "(images not yet cached are embedded first).",
        epilog=_EPILOG_TRAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_data_args(train)
    _add_model_args(train)
    group = train.add_argument_group("training")
    group.add_argument("--out", help="output directory")
    group.add_argument("--task", help="adapter task name (default: the category, or the --out folder name)")
    group.add_argument(
        "--recipe",
        choices=RECIPE_CHOICES,
        help="training recipe: paper (20k steps, lr 1e-5, batch 10), fast (600 steps, lr 3e-3, batch 8) or "
        "auto (default: fast for samplm_lite/samplm_tiny, paper for vit_*); flags below override it",
    )
    group.add_argument("--steps", type=int, help="optimiser steps (default: the recipe's)")
    group.add_argument("--batch-size", type=int, help="instances per step (default: the recipe's)")
    group.add_argument("--lr", type=float, help="AdamW learning rate (default: the recipe's)")
    group.add_argument(
        "--no-pmm", action="store_true", default=None, help="train the PLM only (no point matching)"
    )
    group.add_argument("--val-data", help="validation annotations (same format); default: split --data")
    group.add_argument(
        "--val-fraction", type=float, help="share of images held out for validation (default 0.2)"
    )
    group.add_argument("--seed", type=int, help="seed for the split, prompts and initialisation (default 0)")
    group.add_argument("--precision", choices=["no", "bf16", "fp16"], help="autocast precision (default no)")
    group.add_argument(
        "--no-resume", action="store_true", default=None, help="ignore an existing checkpoint in --out"
    )
    group.add_argument("--config", help="YAML/JSON file with any option or training setting")

    evaluate = sub.add_parser(
        "eval",
        help="evaluate SAM, SAM-F and adapters with the paper's single-click protocol",
        description="Evaluate on the validation split of --data (the same split as `samplm train` with the "
        "same --val-fraction/--seed) or on --val-data: one click at each instance's centre, SAM's top "
        "mask and oracle, SAM-F fitted on the training split, each adapter (PLM, oracle, PMM refinement). "
        "Writes results.json, results.md, visuals/ and sensitivity/ into --out.",
    )
    _add_data_args(evaluate)
    _add_model_args(evaluate)
    group = evaluate.add_argument_group("evaluation")
    group.add_argument(
        "--adapter", nargs="+", help="adapter(s): directory, .safetensors, org/repo[@rev] or name"
    )
    group.add_argument("--out", help="output directory")
    group.add_argument("--val-data", help="evaluation annotations (same format); default: split --data")
    group.add_argument("--val-fraction", type=float, help="share of images evaluated (default 0.2)")
    group.add_argument("--seed", type=int, help="seed of the split (default 0)")
    group.add_argument("--prompt", choices=["point", "box"], help="centre click (default) or the GT box")
    group.add_argument("--no-samf", action="store_true", default=None, help="leave out the SAM-F baseline")
    group.add_argument("--samf-steps", type=int, help="SAM-F fitting steps (default 300)")
    group.add_argument("--no-refine", action="store_true", default=None, help="leave out PMM refinement")
    group.add_argument(
        "--sensitivity", type=int, help="instances to draw prompt sensitivity maps for (default 2)"
    )
    group.add_argument("--visuals", type=int, help="worst and best instances to render (default 3 each)")
    group.add_argument("--max-instances", type=int, help="evaluate at most this many instances")
    group.add_argument("--config", help="YAML/JSON file with any of these options")

    demo = sub.add_parser(
        "demo",
        help="the whole job offline: data, adapter training, evaluation (a few CPU minutes)",
        description="Train a PLM+PMM adapter on a frozen SAM (the built-in samplm_lite by default) with the "
        "fast recipe and evaluate it with one centre click per held-out instance: generated banners "
        "(--task banners, default) or real car photos with plate boxes (--task plates --data FOLDER). "
        "Prints base top-confidence / base oracle / SAM-F / adapter mIoU, writes overlays and the adapter.",
    )
    demo.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    demo.add_argument(
        "--task", choices=demo_defaults.TASKS, default="banners", help="demo task (default banners)"
    )
    demo.add_argument(
        "--data", help="--task plates: VOC folder with annotations/ and images/ (e.g. Kaggle's car-plate set)"
    )
    demo.add_argument(
        "--model-type",
        default=demo_defaults.MODEL_TYPE,
        help="samplm_lite (default), samplm_tiny, or vit_h/vit_l/vit_b with --checkpoint",
    )
    demo.add_argument("--checkpoint", help="SAM checkpoint for --model-type vit_*")
    demo.add_argument(
        "--images",
        type=int,
        default=demo_defaults.IMAGES,
        help="banner images to generate (default %(default)s)",
    )
    demo.add_argument(
        "--max-banners",
        type=int,
        default=MAX_BANNERS,
        help="banners per image: 1 to this many, later ones may occlude earlier ones (default %(default)s)",
    )
    recipe = RECIPES[demo_defaults.RECIPE]
    demo.add_argument("--steps", type=int, help=f"adapter training steps (default {recipe['steps']})")
    demo.add_argument("--batch-size", type=int, help=f"instances per step (default {recipe['batch_size']})")
    demo.add_argument("--lr", type=float, help=f"learning rate (default {recipe['lr']})")
    demo.add_argument(
        "--multimask",
        choices=MULTIMASK_MODES,
        help=f"which of SAM's masks the adapter trains (default {recipe['multimask']}; see docs/training.md)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--backgrounds", nargs="*", help="folders of photos to paste banners on (default: procedural)"
    )
    demo.add_argument("--device", help="torch device (default: cuda if available)")
    demo.add_argument("--cache", help="embedding cache directory (default <out>/cache)")

    push = sub.add_parser("push", help="upload an adapter directory to the Hugging Face Hub")
    push.add_argument("adapter", help="adapter directory (validated before upload)")
    push.add_argument("repo_id", help="Hub repository, e.g. my-org/nose")
    push.add_argument("--token", help="Hub token (default: the stored huggingface_hub token)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="branch to commit to (default main)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "push":
            return _push(args)
        if args.command == "demo":
            return _demo(args)
        options = _merged_options(args, parser)
        return {"embed": _embed, "train": _train, "eval": _eval}[args.command](options)
    except (SamplmError, FileNotFoundError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"samplm: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("samplm: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _merged_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Config file values, overridden by flags given on the command line."""
    options: dict[str, Any] = {}
    if getattr(args, "config", None):
        options.update(_read_config_file(Path(args.config)))
        unknown = sorted(set(options) - _RUN_OPTIONS - _TRAIN_FIELDS)
        if unknown:
            raise ValueError(f"unknown option(s) in {args.config}: {unknown}")
    for key, value in vars(args).items():
        if value is not None and key not in ("command", "config"):
            options[key] = value
    return options


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ValueError("reading YAML config files needs PyYAML: pip install 'samplm[train]'") from exc
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _require(options: dict[str, Any], *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if options.get(n) in (None, "")]
    if missing:
        raise ValueError(f"missing required option(s): {', '.join(missing)}")


def _device(options: dict[str, Any]) -> str:
    import torch

    return options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")


def _read(options: dict[str, Any], data_key: str = "data"):
    from .data import read_dataset

    categories = options.get("category")
    if isinstance(categories, str):
        categories = [categories]
    return read_dataset(
        options["format"],
        options[data_key],
        images=options.get("images"),
        categories=categories,
        strict=bool(options.get("strict_data")),
    )


def _cache_for(options: dict[str, Any], sam):
    from .cache import EmbeddingCache

    root = Path(options.get("cache") or DEFAULT_CACHE).expanduser()
    return EmbeddingCache.for_model(root, sam)


def _full_sam(options: dict[str, Any]):
    from .models import SAM_MODEL_TYPES, build_sam

    model_type = options["model_type"]
    if model_type in SAM_MODEL_TYPES and not options.get("checkpoint"):
        raise ValueError(
            f"--checkpoint is required for --model-type {model_type} (SAM's weights are not bundled)"
        )
    return build_sam(model_type, options.get("checkpoint"))


def _is_main_process() -> bool:
    """True unless this is a secondary process of a multi-process launch (``RANK`` > 0)."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def _main_process_first():
    """Under a multi-process launch, let the main process run the block first (e.g. embedding images)
    while the others wait, then run it on the others (which find the work done)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        with PartialState().main_process_first():
            yield
    else:
        yield


def _embed_datasets(options: dict[str, Any], datasets, sam=None) -> Any:
    """Embed every image of ``datasets`` not yet cached; returns ``(full SAM, cache)``."""
    sam = sam if sam is not None else _full_sam(options)
    cache = _cache_for(options, sam)
    shown = _is_main_process()
    for dataset in datasets:
        stats = cache.build(
            sam,
            dataset.image_paths(),
            expected_sizes=dataset.expected_sizes(),
            device=_device(options),
            progress=shown,
        )
        if shown:
            print(
                f"{dataset.source}: {stats['computed']} embedded, {stats['reused']} already cached "
                f"({cache.directory})"
            )
    return sam, cache


def _training_model_and_cache(options: dict[str, Any], datasets):
    """The SAM to train with and its cache. When every image is cached already, a ``vit_*`` SAM is
    built without its image encoder (the cache key is computed from the checkpoint's weights)."""
    from .cache import EmbeddingCache, encoder_key
    from .models import SAM_MODEL_TYPES, build_sam_without_image_encoder, load_state_dict
    from .models.loading import SAM_IMAGE_SIZE
    from .models.parts import SAM_PIXEL_MEAN, SAM_PIXEL_STD

    model_type = options["model_type"]
    if model_type in SAM_MODEL_TYPES and options.get("checkpoint"):
        state = load_state_dict(options["checkpoint"])
        key = encoder_key(
            state, image_size=SAM_IMAGE_SIZE, pixel_mean=SAM_PIXEL_MEAN, pixel_std=SAM_PIXEL_STD
        )
        cache = EmbeddingCache(Path(options.get("cache") or DEFAULT_CACHE).expanduser(), key)
        if not any(cache.missing(d.image_paths(), d.expected_sizes()) for d in datasets):
            if _is_main_process():
                print(f"all images cached in {cache.directory}; the image encoder is not loaded")
            return build_sam_without_image_encoder(model_type, state_dict=state), cache
    sam, cache = _embed_datasets(options, datasets)
    sam.image_encoder = _placeholder(sam)  # training reads only the cache
    return sam, cache


def _embed(options: dict[str, Any]) -> int:
    _require(options, "data", "format", "model_type")
    _embed_datasets(options, [_read(options)])
    return 0


def _train(options: dict[str, Any]) -> int:
    from .config import AdapterConfig
    from .train.trainer import train
    from .train.trainset import TrainingSet

    _require(options, "data", "format", "model_type", "out")
    train_part, val_part = _split(options, _read(options))
    settings = {f: options[k] for k, f in _TRAIN_FLAGS.items() if k in options}
    settings.update({k: v for k, v in options.items() if k in _TRAIN_FIELDS})
    if options.get("no_pmm"):
        settings["use_pmm"] = False
    recipe, config = recipe_config(options.get("recipe", "auto"), options["model_type"], **settings)
    parts = [p for p in (train_part, val_part) if len(p)]
    with _main_process_first():
        sam, cache = _training_model_and_cache(options, parts)
    points = config.pmm_points if config.use_pmm else None
    shown = _is_main_process()
    train_set = TrainingSet(
        train_part, cache, sam, num_points=points, progress=shown, description="train targets"
    )
    val_set = (
        TrainingSet(val_part, cache, sam, num_points=points, progress=shown, description="val targets")
        if len(val_part)
        else None
    )
    task = options.get("task") or "+".join(options.get("category") or []) or Path(options["out"]).name
    if shown:
        print(
            f"recipe {recipe}: {config.steps} steps of {config.batch_size}, lr {config.lr:g}, "
            f"multimask {config.multimask}"
        )
    metadata = {
        "dataset": str(options["data"]),
        "format": options["format"],
        "train_instances": len(train_set),
    }
    result = train(
        sam,
        train_set,
        options["out"],
        config=config,
        val_set=val_set,
        adapter_config=AdapterConfig(task=task, metadata=metadata),
        model_type=options["model_type"],
        device=_device(options),
        resume=not options.get("no_resume"),
    )
    if shown:
        print(f"adapter written to {result.adapter_dir} ({result.metrics})")
        print(f'use it: predictor.load_adapter("{result.adapter_dir}")')
    return 0


def _split(options: dict[str, Any], dataset):
    """(training part, evaluation part): ``--val-data``, or the seeded split of ``--data``."""
    if options.get("val_data"):
        return dataset, _read(options, "val_data")
    return dataset.split(float(options.get("val_fraction", 0.2)), int(options.get("seed", 0)))


def _eval(options: dict[str, Any]) -> int:
    from .adapter import PromptAdapter
    from .eval import run_evaluation, summary_line

    _require(options, "data", "format", "model_type", "out")
    train_part, eval_part = _split(options, _read(options))
    if not len(eval_part):
        raise ValueError(
            "nothing to evaluate: the evaluation split is empty (check --val-fraction / --val-data)"
        )
    adapters: dict[str, PromptAdapter] = {}
    for spec in options.get("adapter") or []:
        adapter = PromptAdapter.load(spec)
        name = adapter.task if adapter.task not in adapters else f"{adapter.task}#{len(adapters) + 1}"
        adapters[name] = adapter
    use_samf = not options.get("no_samf") and len(train_part) > 0
    parts = [eval_part] + ([train_part] if use_samf else [])
    with _main_process_first():
        sam, cache = _training_model_and_cache(options, parts)
    for adapter in adapters.values():
        adapter.check_compatible(sam)
    config = {
        k: options.get(k) for k in ("data", "val_data", "format", "category", "model_type", "checkpoint")
    }
    config.update(val_fraction=options.get("val_fraction", 0.2), seed=options.get("seed", 0))
    result = run_evaluation(
        sam,
        eval_part,
        cache,
        options["out"],
        adapters=adapters,
        samf_data=train_part if use_samf else None,
        samf_steps=int(options.get("samf_steps", 300)),
        prompt=options.get("prompt", "point"),
        refine=not options.get("no_refine"),
        sensitivity=int(options.get("sensitivity", 2)),
        visuals=int(options.get("visuals", 3)),
        max_instances=options.get("max_instances"),
        config=config,
        device=_device(options),
    )
    print(summary_line(result))
    print(f"results written to {Path(options['out']) / 'results.md'} and results.json")
    return 0


def _placeholder(sam):
    from .models.loading import ImageEncoderPlaceholder

    return ImageEncoderPlaceholder(sam.image_encoder.img_size)


def _demo(args: argparse.Namespace) -> int:
    from .data.images import find_images
    from .demo import format_demo, run_demo
    from .models import SAM_MODEL_TYPES

    if args.model_type in SAM_MODEL_TYPES and not args.checkpoint:
        raise ValueError(f"--checkpoint is required for --model-type {args.model_type}")
    photos = find_images(*(args.backgrounds or []))
    if args.backgrounds and not photos:
        raise ValueError(f"no images found in --backgrounds {args.backgrounds}")
    result = run_demo(
        args.out,
        task=args.task,
        data=args.data,
        model_type=args.model_type,
        checkpoint=args.checkpoint,
        images=args.images,
        max_banners=args.max_banners,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        multimask=args.multimask,
        seed=args.seed,
        backgrounds=photos or None,
        cache=args.cache,
        device=_device({"device": args.device}),
    )
    print(format_demo(result))
    return 0


def _push(args: argparse.Namespace) -> int:
    from .adapter import PromptAdapter
    from .hub import upload_adapter_folder

    adapter = PromptAdapter.load(Path(args.adapter))  # validate before uploading anything
    url = upload_adapter_folder(
        args.adapter,
        args.repo_id,
        token=args.token,
        private=args.private or None,
        revision=args.revision,
        commit_message=f"Upload samplm adapter {adapter.task!r}",
    )
    print(url)
    return 0


_RUN_OPTIONS = {
    "data",
    "format",
    "images",
    "category",
    "strict_data",
    "model_type",
    "checkpoint",
    "cache",
    "device",
    "out",
    "task",
    "recipe",
    "steps",
    "batch_size",
    "lr",
    "no_pmm",
    "val_data",
    "val_fraction",
    "seed",
    "precision",
    "no_resume",
    "adapter",
    "prompt",
    "no_samf",
    "samf_steps",
    "no_refine",
    "sensitivity",
    "visuals",
    "max_instances",
}
_TRAIN_FLAGS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "lr",
    "seed": "seed",
    "precision": "precision",
}
_TRAIN_FIELDS = {
    "grad_accum",
    "weight_decay",
    "warmup_steps",
    "decay_at",
    "decay_gamma",
    "focal_weight",
    "dice_weight",
    "iou_weight",
    "pm_weight",
    "multimask",
    "use_pmm",
    "pmm_points",
    "pmm_jitter",
    "center_power",
    "box_probability",
    "box_jitter",
    "extra_points",
    "val_every",
    "val_max_instances",
    "checkpoint_every",
    "log_every",
}


if __name__ == "__main__":
    sys.exit(main())
