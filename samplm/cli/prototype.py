"""``samplm fit-prototype``: a target prototype from images and masks, with the options of
:class:`~samplm.segment.settings.FitPrototypeSettings`; also the one-shot reference of ``samplm segment``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import PROTOTYPE_NAME, WEIGHTS_NAME
from ..errors import ConfigError
from ..segment.settings import FitPrototypeSettings
from ..utils.checks import printable
from .common import CONFIG_HELP, add_model_options, model_settings, predictor
from .options import add_settings, require, settings_from

if TYPE_CHECKING:
    from ..adapter.prompt_adapter import PromptAdapter
    from ..adapter.prototype import TargetPrototype
    from ..decoder.predictor import CustomSamPredictor
    from ..workspace import ModelSettings


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm fit-prototype``: reference images and masks, where to write, model options."""
    fit = sub.add_parser(
        "fit-prototype",
        help="write a target prototype (for click-free segmentation) from images and masks",
        description="Average the image embeddings under the masks into prototype.safetensors: into "
        "--adapter's directory (used by `samplm segment`) or to --out.",
    )
    add_settings(fit, FitPrototypeSettings)
    add_model_options(fit, cache=False)
    fit.add_argument("--config", help=CONFIG_HELP)
    return fit


def paired_files(images: Sequence[str], masks: Sequence[str]) -> list[tuple[Path, Path]]:
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


def reference(
    images: Sequence[str], masks: Sequence[str], engine: CustomSamPredictor, task: str | None
) -> TargetPrototype:
    """The prototype fitted on ``images`` and their ``masks`` (files or folders, paired in order)."""
    from ..data.images import load_image, read_mask_file
    from ..segment.prototype_fitting import fit_prototype

    loaded = ((load_image(i), read_mask_file(m)) for i, m in paired_files(images, masks))
    return fit_prototype(engine, loaded, task=task)


def run(options: dict[str, Any]) -> int:
    """``samplm fit-prototype``: a prototype from images and masks, into an adapter directory or a file."""
    from ..adapter.prompt_adapter import PromptAdapter

    require(options, "images", "masks", "model_type")
    settings, model = settings_from(FitPrototypeSettings, options), model_settings(options)
    if bool(settings.adapter) == bool(settings.out):
        raise ValueError("give exactly one of --adapter (write into its directory) and --out")
    task, adapter = settings.task, None
    if settings.adapter:
        folder = Path(settings.adapter)
        if not (folder / WEIGHTS_NAME).is_file():
            raise ConfigError("--adapter", f"{folder} is not an adapter directory (holding {WEIGHTS_NAME})")
        adapter = PromptAdapter.load(folder)  # validated whether or not --task is given
        task = task or adapter.task
    engine = predictor(model)
    if adapter is not None:
        require_same_base(adapter, engine.model, settings.adapter, model)
    prototype = reference(settings.images, settings.masks, engine, task)
    if adapter is None:
        written = prototype.save(settings.out)
    else:  # the adapter folder is written by its owner
        adapter.prototype = prototype
        written = adapter.save_pretrained(settings.adapter) / PROTOTYPE_NAME
    print(f"prototype of {prototype.num_masks} mask(s) written to {written}")
    return 0


def require_same_base(adapter: PromptAdapter, sam: Any, where: str, model: ModelSettings) -> None:
    """``fit-prototype --adapter``: refuse (one line naming ``--adapter`` and both bases) a base whose
    fingerprint differs from the one the adapter records, which would overwrite its trained prototype
    with one of another base's embeddings."""
    from ..base.bases import as_base

    base = adapter.config.base_model
    actual = as_base(sam).fingerprint()
    if base.fingerprint is not None and base.fingerprint != actual:
        raise ConfigError(
            "--adapter",
            f"{printable(where)} was trained on base "
            f"{printable(base.model_type or 'unknown type')} (fingerprint {printable(base.fingerprint)}), "
            f"but --model-type {model.model_type}"
            f"{' with --checkpoint' if model.checkpoint else ''} is base {actual}: fit its "
            "prototype with the base it was trained on, or write this one elsewhere with --out",
        )
