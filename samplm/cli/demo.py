"""``samplm demo``: :func:`~samplm.demo.run_demo` with the options of :class:`~samplm.demo.DemoSettings`."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..demo import DemoSettings
from ..workspace import ModelSettings, default_device, require_checkpoint
from .common import CONFIG_HELP
from .options import add_settings, settings_from

_MODEL_OPTIONS = [f.name for f in dataclasses.fields(ModelSettings)]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm demo``: no argparse defaults (``DemoSettings``' apply), so flags override ``--config``."""
    demo = sub.add_parser(
        "demo",
        help="the whole job offline: data, adapter training, evaluation (a few CPU minutes)",
        description="Train a PLM+PMM adapter on a frozen SAM (the built-in samplm_lite by default) with the "
        "fast recipe and evaluate it with one centre click per held-out instance: generated banners "
        "(--task banners, default) or real car photos with plate boxes (--task plates --data FOLDER). "
        "Prints base top-confidence / base oracle / SAM-F / adapter mIoU, writes overlays and the adapter.",
    )
    add_settings(demo, DemoSettings)
    add_settings(demo, ModelSettings, skip=[name for name in _MODEL_OPTIONS if name != "threads"])
    demo.add_argument("--config", help=CONFIG_HELP)
    return demo


def run(options: dict[str, Any]) -> int:
    """``samplm demo``: ``run_demo`` with the options given (its own defaults for the others)."""
    from ..data.images import find_images
    from ..demo import format_demo, run_demo

    settings = settings_from(DemoSettings, options)
    require_checkpoint(settings.model_type, settings.checkpoint)
    photos = find_images(*(settings.backgrounds or []))
    if settings.backgrounds and not photos:
        raise ValueError(f"no images found in --backgrounds {settings.backgrounds}")
    arguments = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    arguments.update(backgrounds=photos or None, device=default_device(settings.device))
    print(format_demo(run_demo(**arguments)))
    return 0
