"""``samplm embed``: encode every image of a dataset once and cache the embeddings."""

from __future__ import annotations

import argparse
from typing import Any

from .common import CONFIG_HELP, add_data_options, add_model_options, data_settings, model_settings
from .options import require


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm embed``: the data and model options."""
    embed = sub.add_parser(
        "embed",
        help="encode every image of a dataset once and cache the embeddings (resumable)",
        description="Run SAM's image encoder once per image and store the embeddings (float16). "
        "Interrupted runs resume where they stopped. Training then reads only the cache.",
    )
    add_data_options(embed)
    add_model_options(embed)
    embed.add_argument("--config", help=CONFIG_HELP)
    return embed


def run(options: dict[str, Any]) -> int:
    """``samplm embed``: cache the embeddings of every image of ``--data``."""
    require(options, "data", "format", "model_type")
    workspace = model_settings(options).workspace()
    workspace.embed([workspace.ranks.together(data_settings(options).read)])
    return 0
