"""The ``samplm`` command: ``embed``, ``train``, ``eval``, ``demo``, ``segment``, ``fit-prototype``,
``export``, ``push`` and ``serve-web``.

``embed``, ``train``, ``eval`` and ``demo`` take ``--config FILE`` (YAML or JSON) with any of their
options (long names with ``_`` for ``-``); flags given on the command line override the file. The
training settings (flags of ``samplm train`` and config keys) are generated from the fields of
:class:`~samplm.train.settings.TrainConfig`. Which SAM to build and which embedding cache to use is
decided by :mod:`samplm.workspace`; this module only parses arguments and calls the library.

Input errors print one line (``samplm: error: ...``) and exit with status 2: argument errors, option
values out of range (checked before any data is read, for flags and config-file values alike), missing
files, unreadable checkpoints, invalid data. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ..adapter.config import check_task_name
from ..constants import WEIGHTS_NAME
from ..errors import ConfigError, SamplmError
from ..segment.generator import PROMPT_SOURCES
from ..train.recipes import RECIPE_CHOICES, RECIPES, recipe_config
from ..train.settings import MULTIMASK_MODES, PRECISIONS, SETTING_LIMITS, TrainConfig
from ..utils.checks import Limit, first_line, printable, shown
from ..utils.files import atomic_write_text
from ..version import __version__
from ..workspace import (
    DEFAULT_CACHE_DIR,
    Workspace,
    build_full_sam,
    default_device,
    is_main_process,
    require_checkpoint,
)

if TYPE_CHECKING:
    from ..adapter.prompt_adapter import PromptAdapter
    from ..data import InstanceDataset

_EPILOG_TRAIN = """\
examples:
  samplm train --data plates/annotations --format voc --model-type samplm_lite --out runs/plates
  samplm train --data plates/annotations --format voc --model-type vit_h \\
      --checkpoint sam_vit_h_4b8939.pth --out runs/plates --recipe paper
  samplm train --config plates.yaml --lr 1e-4        # flags override the config file

The config file (YAML or JSON) may set any flag (use the long name with _ for -, e.g. batch_size),
including every training setting (e.g. warmup_steps, center_power, box_probability, precision).
Outputs in --out: adapter/ (best adapter), checkpoints/last.pt, metrics.jsonl, train_config.json.
"""

# Words for the training settings that have their own; every other field of TrainConfig gets a generic
# line, so a field added to TrainConfig becomes a flag and a config key with no edit here.
_SETTING_HELP = {
    "steps": "optimiser steps (default: the recipe's)",
    "batch_size": "instances per step (default: the recipe's)",
    "lr": "AdamW learning rate (default: the recipe's)",
    "multimask": "which of SAM's masks the adapter trains (default: the recipe's; see docs/training.md)",
    "seed": "seed for the split, prompts and initialisation (default 0)",
    "learn_mask_mix": "train the 3 x 3 blend of SAM's three masks with the PLM (default: the recipe's)",
    "patience": "stop after this many validations without a better trained adapter (0: never; "
    "default: the recipe's)",
    "precision": "autocast precision (default no)",
}
_SETTING_CHOICES = {"multimask": MULTIMASK_MODES, "precision": PRECISIONS}
# Options of the parsers that are not settings of the job itself.
_NOT_OPTIONS = {"help", "version", "debug", "command", "config", "config_keys", "config_actions"}
# Ranges of the options that are not training settings (those are in SETTING_LIMITS, which also covers
# --seed, --steps, --batch-size and --lr of eval and demo).
_OPTION_LIMITS = {
    "opset": Limit(int, 14, 20),
    "min_similarity": Limit(float, -1, 1),
    "relative": Limit(float, 0, 1),
    "max_clicks": Limit(int, 1, 4096),
    "max_images": Limit(int, 1),
    "points_per_side": Limit(int, 1, 256),
    "points_per_batch": Limit(int, 1, 4096),
    "pred_iou_thresh": Limit(float, 0, 1),
    "stability_score_thresh": Limit(float, 0, 1),
    "box_nms_thresh": Limit(float, 0, 1),
    "val_fraction": Limit(float, 0, 1, high_open=True),
    "samf_steps": Limit(int, 1),
    "max_instances": Limit(int, 1),
    "sensitivity": Limit(int, 0),
    "visuals": Limit(int, 0),
    "images": Limit(int, 1),
    "max_pixels": Limit(int, 1),
}


# `samplm segment`: options handed to AdapterMaskGenerator.
_GENERATOR_OPTIONS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
)


class _UsageError(Exception):
    """An argument error found by argparse (reported by :func:`main` as one line)."""


class _Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors become :class:`_UsageError` (one line, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see '{self.prog} --help')")


def train_settings() -> dict[str, Any]:
    """The :class:`TrainConfig` fields that ``samplm train`` takes as flags and config keys, with their
    defaults: every field whose default is a number, string, bool or tuple (not ``extra``)."""
    defaults = TrainConfig()
    settings = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in settings.items() if isinstance(v, (bool, int, float, str, tuple))}


def _add_train_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per :func:`train_settings` entry: ``--batch-size`` for ``batch_size``, ``--use-pmm`` /
    ``--no-use-pmm`` for a bool, several values for a tuple."""
    group = parser.add_argument_group(
        "training settings",
        "The fields of samplm.train.settings.TrainConfig (see docs/training.md). Each defaults to the "
        "--recipe's value; the paper's is shown.",
    )
    for name, default in train_settings().items():
        shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
        kwargs: dict[str, Any] = {
            "help": _SETTING_HELP.get(name, f"paper: {shown}"),
            "choices": _SETTING_CHOICES.get(name),
        }
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kwargs.update(nargs="+", type=type(default[0]) if default else float)
        else:
            kwargs["type"] = type(default)
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, **kwargs)


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    """The options naming a dataset (shared by ``embed``, ``train`` and ``eval``)."""
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


def _add_model_args(parser: argparse.ArgumentParser, *, cache: bool = True) -> None:
    """The options naming the base SAM, its cache (unless ``cache`` is false: jobs that encode every image
    themselves) and device (shared by ``embed``, ``train``, ``eval``, ``segment``, ``fit-prototype``)."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model-type",
        help="vit_h, vit_l, vit_b (with --checkpoint), or the built-in samplm_lite or samplm_tiny",
    )
    group.add_argument("--checkpoint", help="SAM checkpoint (.pth or .safetensors); required for vit_*")
    if cache:
        group.add_argument("--cache", help=f"embedding cache directory (default {DEFAULT_CACHE_DIR})")
    group.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")


def _add_embed(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm embed``."""
    embed = sub.add_parser(
        "embed",
        help="encode every image of a dataset once and cache the embeddings (resumable)",
        description="Run SAM's image encoder once per image and store the embeddings (float16). "
        "Interrupted runs resume where they stopped. Training then reads only the cache.",
    )
    _add_data_args(embed)
    _add_model_args(embed)
    embed.add_argument("--config", help="YAML/JSON file with any of these options")
    return embed


def _add_train(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm train``: data, model, run options and one flag per training setting."""
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
        help="training recipe: paper (20k steps, lr 1e-5, batch 10), fast (600 steps, lr 1e-3, batch 8) or "
        "auto (default: fast for samplm_lite/samplm_tiny, paper for vit_*); settings below override it",
    )
    group.add_argument(
        "--no-pmm", action="store_true", default=None, help="train the PLM only (no point matching)"
    )
    group.add_argument("--val-data", help="validation annotations (same format); default: split --data")
    group.add_argument(
        "--val-fraction", type=float, help="share of images held out for validation (default 0.2)"
    )
    group.add_argument(
        "--no-resume", action="store_true", default=None, help="ignore an existing checkpoint in --out"
    )
    group.add_argument("--config", help="YAML/JSON file with any option or training setting")
    _add_train_settings(train)
    return train


def _add_eval(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm eval``."""
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
    group.add_argument(
        "--auto",
        action="store_true",
        default=None,
        help="click-free instead: COCO mask AP of prior + base decoder and prior + each adapter, clicks "
        "from each adapter's prototype.safetensors (writes auto_results.json)",
    )
    group.add_argument("--config", help="YAML/JSON file with any of these options")
    return evaluate


def _add_demo(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm demo``: no argparse defaults (``run_demo``'s apply), so that flags override ``--config``."""
    from .. import demo as defaults
    from ..data.synthetic.banners import MAX_BANNERS

    demo = sub.add_parser(
        "demo",
        help="the whole job offline: data, adapter training, evaluation (a few CPU minutes)",
        description="Train a PLM+PMM adapter on a frozen SAM (the built-in samplm_lite by default) with the "
        "fast recipe and evaluate it with one centre click per held-out instance: generated banners "
        "(--task banners, default) or real car photos with plate boxes (--task plates --data FOLDER). "
        "Prints base top-confidence / base oracle / SAM-F / adapter mIoU, writes overlays and the adapter.",
    )
    recipe = RECIPES[defaults.RECIPE]
    add = demo.add_argument
    add("--out", help="output directory (default runs/demo)")
    add("--task", choices=defaults.TASKS, help="demo task (default banners)")
    add(
        "--data", help="--task plates: VOC folder with annotations/ and images/ (e.g. Kaggle's car-plate set)"
    )
    add(
        "--model-type",
        help=f"{defaults.MODEL_TYPE} (default), samplm_tiny, or vit_h/vit_l/vit_b with --checkpoint",
    )
    add("--checkpoint", help="SAM checkpoint for --model-type vit_*")
    add("--images", type=int, help=f"banner images to generate (default {defaults.IMAGES})")
    add(
        "--max-banners",
        type=int,
        help="banners per image: 1 to this many, later ones may occlude earlier ones "
        f"(default {MAX_BANNERS})",
    )
    add("--steps", type=int, help=f"adapter training steps (default {recipe['steps']})")
    add("--batch-size", type=int, help=f"instances per step (default {recipe['batch_size']})")
    add("--lr", type=float, help=f"learning rate (default {recipe['lr']})")
    add(
        "--multimask",
        choices=MULTIMASK_MODES,
        help=f"which of SAM's masks the adapter trains (default {recipe['multimask']}; see docs/training.md)",
    )
    add("--seed", type=int, help="seed of the data, the split and training (default 0)")
    add("--backgrounds", nargs="*", help="folders of photos to paste banners on (default: procedural)")
    add("--device", help="torch device (default: cuda if available)")
    add("--cache", help="embedding cache directory (default <out>/cache)")
    add("--config", help="YAML/JSON file with any of these options")
    return demo


def _add_segment(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm segment``: click-free instance segmentation of a folder."""
    segment = sub.add_parser(
        "segment",
        help="find every instance in a folder of images, no clicks (adapter + location prior)",
        description="Segment every image of --images with each --adapter (one COCO category each): clicks "
        "come from the adapter's prototype.safetensors (location prior) or, without one, a grid. With "
        "--reference-image/--reference-mask a one-shot prototype is fitted instead (no adapter needed). "
        "Writes results.json (COCO results, RLE), images.json, summary.json and overlays/ into --out; "
        "re-running the same command skips finished images.",
    )
    add = segment.add_argument
    add("--adapter", nargs="+", help="adapter(s): directory, .safetensors, org/repo[@rev] or name")
    add("--images", help="folder of images (searched recursively)")
    add("--out", help="output directory")
    add("--reference-image", nargs="+", help="one-shot reference image(s)")
    add("--reference-mask", nargs="+", help="their masks (same order), non-zero pixels = target")
    add("--prompts", choices=PROMPT_SOURCES, help="clicks from the prior, a grid, or auto (default)")
    add("--max-images", type=int, help="segment at most this many images (the first, sorted)")
    add(
        "--max-pixels",
        type=int,
        help="skip (and count) images of more pixels than this, read from the header (default 80000000)",
    )
    add("--points-per-side", type=int, help="grid prompts: clicks per side (default 32)")
    add("--points-per-batch", type=int, help="prompts decoded together (default 64)")
    add(
        "--pred-iou-thresh",
        type=float,
        help="keep masks with predicted IoU above (default: 0.88 grid, 0 prior)",
    )
    add("--stability-score-thresh", type=float, help="keep masks this stable (default: 0.95 grid, 0 prior)")
    add("--box-nms-thresh", type=float, help="box IoU above which duplicates are removed (default 0.7)")
    add("--min-similarity", type=float, help="prior: least cosine similarity of a click (default 0.4)")
    add("--relative", type=float, help="prior: least share of the image's top similarity (default 0.5)")
    add("--max-clicks", type=int, help="prior: at most this many prompts per image (default 8)")
    add("--no-overlays", action="store_true", default=None, help="do not write overlay PNGs")
    _add_model_args(segment, cache=False)
    segment.add_argument("--config", help="YAML/JSON file with any of these options")
    return segment


def _add_fit_prototype(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm fit-prototype``."""
    fit = sub.add_parser(
        "fit-prototype",
        help="write a target prototype (for click-free segmentation) from images and masks",
        description="Average the image embeddings under the masks into prototype.safetensors: into "
        "--adapter's directory (used by `samplm segment`) or to --out.",
    )
    fit.add_argument("--images", nargs="+", help="reference image files or folders")
    fit.add_argument("--masks", nargs="+", help="their masks (files or folders, paired in sorted order)")
    fit.add_argument("--adapter", help="adapter directory to write prototype.safetensors into")
    fit.add_argument("--out", help="or: the prototype file (.safetensors) or directory to write")
    fit.add_argument("--task", help="task name recorded in the prototype (default: the adapter's)")
    _add_model_args(fit, cache=False)
    fit.add_argument("--config", help="YAML/JSON file with any of these options")
    return fit


def _add_export(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm export``."""
    export = sub.add_parser(
        "export",
        help="write an adapter (with SAM's prompt encoder and mask decoder) as one ONNX graph",
        description="Write SAM's prompt encoder + the adapter's PLM + SAM's mask decoder as one ONNX graph "
        "with the inputs and outputs of segment_anything's SamOnnxModel (SAM's ONNX clients load it "
        "unchanged), exact for every image size. --encoder also writes the image encoder (small bases).",
    )
    add = export.add_argument
    add("--adapter", help="adapter: directory, .safetensors, org/repo[@rev] or name (default: plain SAM)")
    add("--out", help="the .onnx file to write")
    add("--return-single-mask", action="store_true", default=None, help="one mask per prompt (SAM's rule)")
    add("--opset", type=int, help="ONNX opset (default 17; 14 to 20)")
    add("--quantize", action="store_true", default=None, help="onnxruntime dynamic quantisation (int8)")
    add("--encoder", help="also write the image encoder to this .onnx file (samplm_tiny, samplm_lite)")
    add(
        "--web",
        help="instead: write the example page's models (encoder, plain SAM and --adapter decoders, "
        "models.json) into this folder, e.g. examples/web/models",
    )
    _add_model_args(export, cache=False)
    add("--config", help="YAML/JSON file with any of these options")
    return export


def _add_push(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm push``."""
    push = sub.add_parser("push", help="upload an adapter directory to the Hugging Face Hub")
    push.add_argument("adapter", help="adapter directory (validated before upload)")
    push.add_argument("repo_id", help="Hub repository, e.g. my-org/nose")
    push.add_argument("--token", help="Hub token (default: the stored huggingface_hub token)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="branch to commit to (default main)")
    return push


def _add_serve_web(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm serve-web``."""
    serve = sub.add_parser(
        "serve-web",
        help="serve the example page (examples/web) with its models on this machine",
        description="Serve the example page (index.html, app.js, onnxruntime-web from setup.sh, models "
        "from samplm export --web) on loopback, with the headers onnxruntime-web's threads need. "
        "Ctrl-C stops it.",
    )
    serve.add_argument("--page", default="examples/web", help="the page folder (default examples/web)")
    serve.add_argument("--models", help="models folder written by samplm export --web (default PAGE/models)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000; 0: any free port)")
    serve.add_argument("--log-requests", action="store_true", help="print one line per request")
    return serve


_PORT = Limit(int, 0, 65535)


def _port(text: str) -> int:
    """``--port``: an integer in [0, 65535] (argparse names the flag in its one-line error)."""
    port = _convert(int, text)
    if not isinstance(port, int) or not _PORT.contains(port):
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 65535], got {shown(text)}")
    return port


def _option_names(parser: argparse.ArgumentParser) -> set[str]:
    """The option names (``dest``) a subcommand's parser defines."""
    return {action.dest for action in parser._actions} - _NOT_OPTIONS


def _option_actions(parsers: Sequence[argparse.ArgumentParser]) -> dict[str, argparse.Action]:
    """``{dest: action}`` of the options of ``parsers``: how a config-file value of each is typed."""
    actions: dict[str, argparse.Action] = {}
    for parser in parsers:
        for action in parser._actions:
            if action.dest not in _NOT_OPTIONS:
                actions.setdefault(action.dest, action)
    return actions


def build_parser() -> argparse.ArgumentParser:
    """The ``samplm`` parser. Each subcommand taking ``--config`` records the keys its file may hold
    (``config_keys``, with their flags in ``config_actions``): a file may be shared by ``embed``,
    ``train`` and ``eval``."""
    parser = _Parser(
        prog="samplm",
        description="Customize a frozen Segment Anything Model to your task with prompt-learning adapters.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    jobs = [_add_embed(sub), _add_train(sub), _add_eval(sub)]
    job_keys = frozenset().union(*map(_option_names, jobs))
    for job in jobs:
        job.set_defaults(config_keys=job_keys, config_actions=_option_actions(jobs))
    demo = _add_demo(sub)
    demo.set_defaults(config_keys=frozenset(_option_names(demo)), config_actions=_option_actions([demo]))
    segment = _add_segment(sub)
    segment.set_defaults(
        config_keys=frozenset(_option_names(segment)), config_actions=_option_actions([segment])
    )
    exporter = _add_export(sub)
    exporter.set_defaults(
        config_keys=frozenset(_option_names(exporter)), config_actions=_option_actions([exporter])
    )
    fit = _add_fit_prototype(sub)
    fit.set_defaults(config_keys=frozenset(_option_names(fit)), config_actions=_option_actions([fit]))
    push = _add_push(sub)
    serve = _add_serve_web(sub)
    # --debug also after the command: samplm train ... --debug
    for command in (
        *jobs,
        demo,
        segment,
        fit,
        exporter,
        push,
        serve,
    ):  # also after the command: samplm train ... --debug
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``samplm`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Input errors print one line ``samplm: error: ...`` and return 2 (with ``--debug``: raised, with
    their traceback); Ctrl-C returns 130.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"samplm: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command in _PLAIN_COMMANDS:
            return _PLAIN_COMMANDS[args.command](args)
        return _COMMANDS[args.command](_merged_options(args))
    except (SamplmError, OSError, ValueError, KeyError) as exc:
        if args.debug:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"samplm: error: {_escaped_lines(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("samplm: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _escaped_lines(message: object) -> str:
    """An error message for the terminal: each of its lines through :func:`printable` (an ESC or other
    control character in a name read from a file is shown escaped, never sent to the terminal)."""
    return "\n".join(printable(line) for line in str(message).splitlines())


def _merged_options(args: argparse.Namespace) -> dict[str, Any]:
    """Config file values, overridden by flags given on the command line, every value typed and checked
    (before any data is read); errors name the flag (``--lr``) or the file's key (``lr in run.yaml``)."""
    options: dict[str, Any] = {}
    labels: dict[str, str] = {}
    if args.config:
        values = _read_config_file(Path(args.config))
        unknown = sorted(set(values) - args.config_keys)
        if unknown:
            raise ValueError(f"unknown option(s) in {args.config}: {unknown}")
        for key, value in values.items():
            labels[key] = f"{key} in {args.config}"
            options[key] = _file_value(args.config_actions[key], value, labels[key])
    for key, value in vars(args).items():
        if value is not None and key not in _NOT_OPTIONS:
            options[key], labels[key] = value, "--" + key.replace("_", "-")
    for key, value in options.items():
        limit = SETTING_LIMITS.get(key) or _OPTION_LIMITS.get(key)
        if limit is not None and args.config_actions[key].type in (int, float):  # not eval's --images
            checked = [limit.check(labels[key], v) for v in (value if isinstance(value, list) else [value])]
            options[key] = checked if isinstance(value, list) else checked[0]
    _check_places(options, labels)
    return options


def _check_places(options: dict[str, Any], labels: dict[str, str]) -> None:
    """``--device`` names a device this machine has; ``--task`` is a task name; the files and folders to
    write (``--out``, ``--encoder``, ``--web``) do not lie under a file; ``--out`` is not an existing file."""
    if options.get("device"):
        options["device"] = default_device(str(options["device"]))
    if options.get("task") is not None:
        check_task_name(options["task"], labels["task"])
    for key in ("out", "encoder", "web"):
        if options.get(key):
            _check_writable_place(Path(options[key]).expanduser(), labels[key])
    out = options.get("out")
    writes_file = str(out).endswith((".safetensors", ".onnx"))  # fit-prototype, export: --out FILE
    if out and not writes_file and Path(out).expanduser().exists() and not Path(out).expanduser().is_dir():
        raise ConfigError(labels["out"], f"{out} is a file; give a directory (it is created if missing)")


def _check_writable_place(path: Path, label: str) -> None:
    """Refuse ``path`` (one line naming ``label``) when an existing part of it above it is a file, so that
    it cannot be written (rather than an ``OSError`` halfway)."""
    for above in path.parents:
        if above.is_dir():
            return
        if above.exists() or above.is_symlink():
            raise ConfigError(
                label, f"{path} lies under {above}, which is not a folder; give a path in a folder"
            )


def _file_value(action: argparse.Action, value: Any, label: str) -> Any:
    """A config-file value as its flag would parse it: ``true``/``false`` for switches, a list (or one
    value) for options taking several, numeric strings (YAML reads ``1e-4`` as one) converted with the
    option's type, and the option's choices enforced."""
    if action.nargs == 0:  # --no-pmm, --use-pmm/--no-use-pmm, --strict-data
        if not isinstance(value, bool):
            raise ConfigError(label, f"must be true or false, got {shown(value)}")
        return value
    if action.nargs in ("+", "*"):
        return [_file_scalar(action, item, label) for item in (value if isinstance(value, list) else [value])]
    return _file_scalar(action, value, label)


def _file_scalar(action: argparse.Action, value: Any, label: str) -> Any:
    """One config-file value converted with the option's type (``int``, ``float`` or ``str``)."""
    kind = action.type if action.type in (int, float) else str
    plain = isinstance(value, int | float | str) and not isinstance(value, bool)
    converted = _convert(kind, value) if plain else None
    if converted is None:
        noun = {int: "an integer", float: "a number", str: "a string"}[kind]
        raise ConfigError(label, f"must be {noun}, got {shown(value)}")
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(label, f"must be one of {tuple(action.choices)}, got {shown(value)}")
    return converted


def _convert(kind: type, value: int | float | str) -> int | float | str | None:
    """``value`` as ``kind``, or ``None`` if it is not one (``"2e3"`` and ``2000.0`` are the int 2000)."""
    if kind is str:
        return str(value)
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        return None
    if kind is float:
        return float(number)
    if isinstance(number, float):
        return int(number) if number.is_integer() else None
    return number


def _read_config_file(path: Path) -> dict[str, Any]:
    """A YAML/JSON mapping of option names (``-`` read as ``_``) to values."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ValueError("reading YAML config files needs PyYAML: pip install 'samplm[train]'") from exc
        kind, parse, errors = "YAML", yaml.safe_load, (yaml.YAMLError, RecursionError)
    else:
        kind, parse, errors = "JSON", json.loads, (ValueError, RecursionError)
    try:
        data = parse(text)
    except errors as exc:
        raise ValueError(f"config file {path} is not valid {kind} ({first_line(exc)})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of option names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _require(options: dict[str, Any], *names: str) -> None:
    """Raise ``ValueError`` naming the flags among ``names`` that are unset."""
    missing = [f"--{n.replace('_', '-')}" for n in names if options.get(n) in (None, "")]
    if missing:
        raise ValueError(f"missing required option(s): {', '.join(missing)}")


def _workspace(options: dict[str, Any]) -> Workspace:
    """The model, cache and device named by the options; only the main process prints."""
    return Workspace(
        options["model_type"],
        options.get("checkpoint"),
        cache_dir=options.get("cache"),
        device=default_device(options.get("device")),
        verbose=is_main_process(),
    )


def _read(options: dict[str, Any], data_key: str = "data") -> InstanceDataset:
    """The dataset at ``options[data_key]`` in ``--format``, limited to ``--category``."""
    from ..data import read_dataset

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


def _split(options: dict[str, Any], dataset: InstanceDataset) -> tuple[InstanceDataset, InstanceDataset]:
    """(training part, evaluation part): ``--val-data``, or the seeded split of ``--data``."""
    if options.get("val_data"):
        return dataset, _read(options, "val_data")
    return dataset.split(float(options.get("val_fraction", 0.2)), int(options.get("seed", 0)))


def _embed(options: dict[str, Any]) -> int:
    """``samplm embed``: cache the embeddings of every image of ``--data``."""
    _require(options, "data", "format", "model_type")
    _workspace(options).embed([_read(options)])
    return 0


def _train_config(options: dict[str, Any], instances: int | None = None) -> tuple[str, TrainConfig]:
    """``(recipe name, TrainConfig)``: the recipe (sized to ``instances`` training instances when
    given), overridden by the training settings in ``options``."""
    settings = {name: options[name] for name in train_settings() if name in options}
    if options.get("no_pmm"):
        settings["use_pmm"] = False
    recipe = options.get("recipe", "auto")
    return recipe_config(recipe, options["model_type"], instances=instances, **settings)


def _train(options: dict[str, Any]) -> int:
    """``samplm train``: recipe and settings, SAM and cache, the validation plan, then training."""
    from ..adapter.config import AdapterConfig
    from ..train.fit import fit_adapter, plan_for

    _require(options, "data", "format", "model_type", "out")
    _train_config(options)  # settings are checked before the data is read
    task = _task(options)
    dataset = _read(options)
    plan = plan_for(dataset, split=bool(options.get("val_data")) or "val_fraction" in options)
    train_part, val_part = _split(options, dataset) if plan.kind == "split" else (dataset, None)
    recipe, config = _train_config(options, instances=len(train_part))
    workspace = _workspace(options)
    sam, cache = workspace.model_and_cache([p for p in (train_part, val_part) if p is not None and len(p)])
    workspace.say(
        f"recipe {recipe} for {len(train_part)} instances: {config.steps} steps of {config.batch_size}, "
        f"lr {config.lr:g}, multimask {config.multimask}, validation every {config.val_every} steps"
        f"{f', patience {config.patience}' if config.patience else ''}; {plan.describe()}"
    )
    metadata = {"dataset": str(options["data"]), "format": options["format"]}
    result = fit_adapter(
        sam,
        train_part,
        val_part,
        cache,
        options["out"],
        config=config,
        adapter_config=AdapterConfig(
            task=task, metadata={**metadata, "train_instances": len(train_part), "validation": plan.kind}
        ),
        plan=plan,
        model_type=options["model_type"],
        device=workspace.device,
        resume=not options.get("no_resume"),
        progress=workspace.verbose,
    )
    workspace.say(f"adapter written to {result.adapter_dir}")
    workspace.say(f'use it: predictor.load_adapter("{result.adapter_dir}")')
    return 0


def _task(options: dict[str, Any]) -> str:
    """``samplm train``'s task: ``--task`` (checked with the other options), else the categories joined by
    ``+``, else the name of the ``--out`` folder, which must be a task name too."""
    if options.get("task"):
        return options["task"]
    default = "+".join(options.get("category") or []) or Path(options["out"]).name
    return check_task_name(default, "--task (default: the --category names or the --out folder's name)")


def _load_adapters(specs: Sequence[str]) -> dict[str, PromptAdapter]:
    """``--adapter`` values loaded and named by task (``task#2`` for a repeated task)."""
    from ..adapter.prompt_adapter import PromptAdapter

    adapters: dict[str, PromptAdapter] = {}
    for spec in specs:
        adapter = PromptAdapter.load(spec)
        name = adapter.task if adapter.task not in adapters else f"{adapter.task}#{len(adapters) + 1}"
        adapters[name] = adapter
    return adapters


def _eval(options: dict[str, Any]) -> int:
    """``samplm eval``: the paper's single-click protocol on the evaluation split."""
    from ..eval import run_evaluation, summary_line

    _require(options, "data", "format", "model_type", "out")
    train_part, eval_part = _split(options, _read(options))
    if not len(eval_part):
        raise ValueError(
            "nothing to evaluate: the evaluation split is empty (check --val-fraction / --val-data)"
        )
    if options.get("auto"):
        return _eval_auto(options, eval_part)
    adapters = _load_adapters(options.get("adapter") or [])
    use_samf = not options.get("no_samf") and len(train_part) > 0
    workspace = _workspace(options)
    sam, cache = workspace.model_and_cache([eval_part] + ([train_part] if use_samf else []))
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
        device=workspace.device,
    )
    print(summary_line(result))
    print(f"results written to {Path(options['out']) / 'results.md'} and results.json")
    return 0


def _eval_auto(options: dict[str, Any], eval_part: InstanceDataset) -> int:
    """``samplm eval --auto``: COCO mask AP of click-free segmentation on the evaluation split."""
    from ..eval.click_free import AutoMethod, evaluate_ap
    from ..segment.jobs import make_tasks

    _require(options, "adapter")
    predictor = _predictor(options)
    tasks, _ = make_tasks(predictor, options["adapter"], prompts="prior")
    methods = [AutoMethod(f"prior + {t.name} adapter", t.adapter_name, t.generator) for t in tasks]
    base = tasks[0].generator
    methods.insert(0, AutoMethod("prior + base decoder", None, base))
    results = evaluate_ap(predictor, eval_part, methods)
    out = Path(options["out"])
    atomic_write_text(out / "auto_results.json", json.dumps(results, indent=1))
    print("| method (no clicks) | AP | AP50 | s / image |\n|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {100 * row['AP']:.2f} | {100 * row['AP50']:.2f} | {row['seconds_per_image']:.3f} |"
        )
    print(f"results written to {out / 'auto_results.json'}")
    return 0


def _demo(options: dict[str, Any]) -> int:
    """``samplm demo``: ``run_demo`` with the options given (its own defaults for the others)."""
    from ..data.images import find_images
    from ..demo import MODEL_TYPE, format_demo, run_demo

    require_checkpoint(options.get("model_type", MODEL_TYPE), options.get("checkpoint"))
    folders = options.pop("backgrounds", None)
    photos = find_images(*(folders or []))
    if folders and not photos:
        raise ValueError(f"no images found in --backgrounds {folders}")
    options["device"] = default_device(options.get("device"))
    result = run_demo(**options, backgrounds=photos or None)
    print(format_demo(result))
    return 0


def _push(args: argparse.Namespace) -> int:
    """``samplm push``: validate the adapter directory, then upload it."""
    from ..adapter.hub import upload_adapter_folder
    from ..adapter.prompt_adapter import PromptAdapter

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


def _serve_web(args: argparse.Namespace) -> int:
    """``samplm serve-web``: check the page folder, then serve it until Ctrl-C."""
    from ..export.web import serve_web

    server = serve_web(
        args.page, models=args.models, host=args.host, port=args.port, quiet=not args.log_requests
    )
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # an address a browser on this machine opens
    url = f"http://{shown}:{port}/index.html"
    print(f"serving {Path(args.page).resolve()} at {url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0


def _predictor(options: dict[str, Any]):
    """A :class:`CustomSamPredictor` on the full SAM named by ``--model-type`` / ``--checkpoint``."""
    from ..decoder.predictor import CustomSamPredictor

    sam = build_full_sam(options["model_type"], options.get("checkpoint"))
    return CustomSamPredictor(sam.to(default_device(options.get("device"))).eval())


def _paired_files(images: Sequence[str], masks: Sequence[str]) -> list[tuple[Path, Path]]:
    """``--images`` and ``--masks`` (files or folders) as (image, mask) pairs in sorted order."""
    from ..data.images import find_images

    def files(paths: Sequence[str]) -> list[Path]:
        return [q for p in paths for q in (find_images(p) if Path(p).is_dir() else [Path(p)])]

    image_files, mask_files = files(images), files(masks)
    if not image_files or len(image_files) != len(mask_files):
        raise ValueError(
            f"--images gives {len(image_files)} image(s) and --masks {len(mask_files)} mask(s); "
            "give one mask per image (at least one)"
        )
    return list(zip(image_files, mask_files, strict=True))


def _reference(options: dict[str, Any], predictor, task: str | None):
    """The prototype fitted on ``--reference-image``/``--reference-mask`` (or ``--images``/``--masks``)."""
    from ..data.images import load_image, read_mask_file
    from ..segment.prototype_fitting import fit_prototype

    pairs = _paired_files(options["reference_image"], options["reference_mask"])
    loaded = ((load_image(i), read_mask_file(m)) for i, m in pairs)
    return fit_prototype(predictor, loaded, task=task)


def _segment(options: dict[str, Any]) -> int:
    """``samplm segment``: tasks from adapters / a reference, then every image of ``--images``."""
    from ..data.images import DEFAULT_MAX_PIXELS, find_images
    from ..prompts.location_prior import PriorSettings
    from ..segment.jobs import make_tasks, segment_images

    _require(options, "images", "out", "model_type")
    if bool(options.get("reference_image")) != bool(options.get("reference_mask")):
        raise ValueError("--reference-image and --reference-mask go together")
    images = find_images(options["images"])[: options.get("max_images")]
    if not images:
        raise ValueError(f"no images found in --images {options['images']}")
    predictor = _predictor(options)
    reference = _reference(options, predictor, None) if options.get("reference_image") else None
    prior = PriorSettings(
        **{k: options[k] for k in ("min_similarity", "relative", "max_clicks") if k in options}
    )
    generator = {k: options[k] for k in _GENERATOR_OPTIONS if k in options}
    tasks, notes = make_tasks(
        predictor,
        options.get("adapter") or [],
        reference=reference,
        prompts=options.get("prompts", "auto"),
        prior=prior,
        **generator,
    )
    for note in notes:
        print(f"samplm: note: {printable(note)}", file=sys.stderr)
    summary = segment_images(
        predictor,
        tasks,
        images,
        options["out"],
        overlays=not options.get("no_overlays"),
        max_pixels=options.get("max_pixels", DEFAULT_MAX_PIXELS),
    )
    for reason in summary.failed.values():
        print(f"samplm: skipped an image: {printable(reason)}", file=sys.stderr)
    print(summary.line())
    print(f"results written to {Path(options['out']) / 'results.json'} (COCO), overlays/ and summary.json")
    return 0


def _fit_prototype(options: dict[str, Any]) -> int:
    """``samplm fit-prototype``: a prototype from images and masks, into an adapter directory or a file."""
    from ..adapter.prompt_adapter import PromptAdapter

    _require(options, "images", "masks", "model_type")
    if bool(options.get("adapter")) == bool(options.get("out")):
        raise ValueError("give exactly one of --adapter (write into its directory) and --out")
    task, adapter = options.get("task"), None
    if options.get("adapter"):
        folder = Path(options["adapter"])
        if not (folder / WEIGHTS_NAME).is_file():
            raise ConfigError("--adapter", f"{folder} is not an adapter directory (holding {WEIGHTS_NAME})")
        adapter = PromptAdapter.load(folder)  # validated whether or not --task is given
        task = task or adapter.task
    predictor = _predictor(options)
    if adapter is not None:
        _require_same_base(adapter, predictor.model, options)
    options.update(reference_image=options["images"], reference_mask=options["masks"])
    prototype = _reference(options, predictor, task)
    written = prototype.save(options.get("adapter") or options["out"])
    print(f"prototype of {prototype.num_masks} mask(s) written to {written}")
    return 0


def _require_same_base(adapter: PromptAdapter, sam: Any, options: dict[str, Any]) -> None:
    """``fit-prototype --adapter``: refuse (one line naming ``--adapter`` and both bases) a base whose
    fingerprint differs from the one the adapter records, which would overwrite its trained prototype
    with one of another base's embeddings."""
    from ..utils.fingerprint import sam_fingerprint

    base = adapter.config.base_model
    actual = sam_fingerprint(sam)
    if base.fingerprint is not None and base.fingerprint != actual:
        raise ConfigError(
            "--adapter",
            f"{printable(options['adapter'])} was trained on base "
            f"{printable(base.model_type or 'unknown type')} (fingerprint {printable(base.fingerprint)}), "
            f"but --model-type {options['model_type']}"
            f"{' with --checkpoint' if options.get('checkpoint') else ''} is base {actual}: fit its "
            "prototype with the base it was trained on, or write this one elsewhere with --out",
        )


def _export(options: dict[str, Any]) -> int:
    """``samplm export``: the adapter's ONNX graph (and the image encoder with ``--encoder``)."""
    from ..adapter.prompt_adapter import PromptAdapter
    from ..export.onnx import WEB_PLAIN_SAM_LABEL, export_encoder_onnx, export_onnx, write_web_bundle

    _require(options, "model_type")
    _check_export_files(options)
    sam = build_full_sam(options["model_type"], options.get("checkpoint")).eval()
    adapter = PromptAdapter.load(options["adapter"]) if options.get("adapter") else None
    if adapter is not None:
        adapter.check_compatible(sam, strict=True)  # a base mismatch is an error here, not a warning
    opset = int(options.get("opset", 17))
    if options.get("web"):
        adapters = {WEB_PLAIN_SAM_LABEL: None, **({adapter.task: adapter} if adapter is not None else {})}
        folder = write_web_bundle(
            sam, adapters, options["web"], model_type=options["model_type"], opset=opset
        )
        print(f"wrote the page's models to {folder}; serve the page: samplm serve-web --models {folder}")
        return 0
    written = export_onnx(
        sam,
        options["out"],
        adapter=adapter,
        model_type=options["model_type"],
        return_single_mask=bool(options.get("return_single_mask")),
        opset=opset,
        quantize=bool(options.get("quantize")),
    )
    print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)")
    if options.get("encoder"):
        encoder = export_encoder_onnx(sam, options["encoder"], opset=opset, model_type=options["model_type"])
        print(f"wrote {encoder} ({encoder.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _check_export_files(options: dict[str, Any]) -> None:
    """``export``: ``--out`` or ``--web`` (not both); ``--out`` and ``--encoder`` are two files, neither a
    folder; ``--web`` is not a file."""
    out, encoder, web = (options.get(key) for key in ("out", "encoder", "web"))
    if not out and not web:
        raise ValueError("missing required option: --out (or --web)")
    if web and (out or encoder):
        raise ConfigError(
            "--web", "writes the encoder, the decoders and models.json; leave out --out and --encoder"
        )
    if web and Path(web).expanduser().is_file():
        raise ConfigError("--web", f"{web} is a file; give a folder (it is created if missing)")
    for flag, path in (("--out", out), ("--encoder", encoder)):
        if path and Path(path).expanduser().is_dir():
            raise ConfigError(flag, f"{path} is a folder; give the .onnx file to write")
    if out and encoder and Path(out).expanduser().resolve() == Path(encoder).expanduser().resolve():
        raise ConfigError(
            "--out and --encoder", f"name the same file ({out}, {encoder}); give two different files"
        )


_COMMANDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "embed": _embed,
    "train": _train,
    "eval": _eval,
    "demo": _demo,
    "segment": _segment,
    "fit-prototype": _fit_prototype,
    "export": _export,
}

# subcommands that take their parsed arguments as they are (no --config file)
_PLAIN_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"push": _push, "serve-web": _serve_web}
