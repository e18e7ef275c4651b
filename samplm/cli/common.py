"""What several commands share: the data and model options, the dataset and its split, a predictor and
the adapters named by ``--adapter``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..data.settings import DataSettings
from ..workspace import ModelSettings, build_full_sam
from .options import add_settings, settings_from

if TYPE_CHECKING:
    from ..adapter.prompt_adapter import PromptAdapter
    from ..data import InstanceDataset
    from ..decoder.predictor import CustomSamPredictor
    from ..decoder.sam2_predictor import CustomSam2Predictor

CONFIG_HELP = "YAML/JSON file with any of these options"


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """The options naming a dataset (:class:`DataSettings`; ``embed``, ``train`` and ``eval``)."""
    add_settings(parser, DataSettings, title="data")


def add_model_options(parser: argparse.ArgumentParser, *, cache: bool = True) -> None:
    """The options naming the base SAM (:class:`ModelSettings`), without ``--cache`` unless ``cache``
    (jobs that encode every image themselves leave it out)."""
    add_settings(parser, ModelSettings, title="model", skip=() if cache else ("cache",))


def data_settings(options: dict[str, Any]) -> DataSettings:
    """The :class:`DataSettings` in ``options``."""
    return settings_from(DataSettings, options)


def model_settings(options: dict[str, Any]) -> ModelSettings:
    """The :class:`ModelSettings` in ``options``."""
    return settings_from(ModelSettings, options)


def split(
    data: DataSettings, dataset: InstanceDataset, val_data: str | None, val_fraction: float, seed: int
) -> tuple[InstanceDataset, InstanceDataset]:
    """(training part, evaluation part): the dataset at ``val_data``, or the seeded split of ``dataset``."""
    if val_data:
        return dataset, data.read(val_data)
    return dataset.split(float(val_fraction), int(seed))


def predictor(model: ModelSettings) -> CustomSamPredictor | CustomSam2Predictor:
    """The adapter-aware predictor (:func:`~samplm.decoder.for_base.predictor_for`) on the full base
    named by ``--model-type`` / ``--checkpoint``."""
    from ..decoder.for_base import predictor_for

    device, ranks = model.placement()
    sam = ranks.together(lambda: build_full_sam(model.model_type, model.checkpoint).to(device).eval())
    return predictor_for(sam)


def load_adapters(specs: Sequence[str]) -> dict[str, PromptAdapter]:
    """``--adapter`` values loaded and named by task (``task#2`` for a repeated task)."""
    from ..adapter.prompt_adapter import PromptAdapter

    adapters: dict[str, PromptAdapter] = {}
    for spec in specs:
        adapter = PromptAdapter.load(spec)
        name = adapter.task if adapter.task not in adapters else f"{adapter.task}#{len(adapters) + 1}"
        adapters[name] = adapter
    return adapters
