"""The ``README.md`` model card written next to an adapter (YAML front matter + prose)."""

from __future__ import annotations

import json
from typing import Any

from ..base.loading import HF_MODEL_TYPE, SMALL_MODEL_TYPES
from ..base.meta_sam2 import SAM2_MODEL_TYPES
from ..constants import LIBRARY_NAME, PIPELINE_TAG
from .config import AdapterConfig


def _yaml_scalar(value: Any) -> str:
    # A JSON string/number/bool/null is a valid YAML flow scalar.
    return json.dumps(value)


def _build_base_lines(model_type: str | None) -> list[str]:
    """Usage lines that build the base and its predictor: samplm's own bases ship their weights, SAM 1
    and SAM 2 need Meta's checkpoint, ``hf`` a transformers SamModel folder or Hub id."""
    if model_type in SAM2_MODEL_TYPES:
        return [
            "from samplm import CustomSam2Predictor",
            "from samplm.base import build_sam",
            "",
            f'sam = build_sam("{model_type}", "{model_type}.pt")  # Meta\'s checkpoint',
            "predictor = CustomSam2Predictor(sam)",
        ]
    if model_type in SMALL_MODEL_TYPES or model_type == HF_MODEL_TYPE:
        weights = "  # weights ship with samplm" if model_type in SMALL_MODEL_TYPES else ""
        source = ', "facebook/sam-vit-base"' if model_type == HF_MODEL_TYPE else ""
        return [
            "from samplm import CustomSamPredictor",
            "from samplm.base import build_sam",
            "",
            f'sam = build_sam("{model_type}"{source}){weights}',
            "predictor = CustomSamPredictor(sam)",
        ]
    return [
        "from segment_anything import sam_model_registry",
        "from samplm import CustomSamPredictor",
        "",
        f'sam = sam_model_registry["{model_type or "vit_h"}"](checkpoint="...")',
        "predictor = CustomSamPredictor(sam)",
    ]


def render_model_card(config: AdapterConfig, num_parameters: int, repo_id: str | None = None) -> str:
    """Render the model card of an adapter.

    Args:
        config: the adapter's config (task, base model, metrics under ``metadata["metrics"]``).
        num_parameters: parameter count of the saved modules.
        repo_id: Hub repo the card is written for, used in the usage snippet.
    """
    base = config.base_model
    tags = [LIBRARY_NAME, "segment-anything", "prompt-learning", "image-segmentation", config.task]
    front = [
        "---",
        f"library_name: {LIBRARY_NAME}",
        f"pipeline_tag: {PIPELINE_TAG}",
        "tags:",
        *[f"- {_yaml_scalar(tag)}" for tag in tags],
    ]
    if base.model_type:
        front.append(f"base_model_type: {_yaml_scalar(base.model_type)}")
    if base.fingerprint:
        front.append(f"base_model_fingerprint: {_yaml_scalar(base.fingerprint)}")
    metrics = config.metadata.get("metrics") if isinstance(config.metadata, dict) else None
    if isinstance(metrics, dict) and metrics:
        front.append("metrics:")
        front += [f"- {_yaml_scalar(name)}" for name in metrics]
    front.append("---")

    modules = "PLM + PMM" if config.pmm is not None else "PLM"
    load_name = repo_id or "path/to/this/adapter"
    body = [
        "",
        f"# samplm adapter: {config.task}",
        "",
        f"A prompt-learning adapter ({modules}, {num_parameters:,} parameters) that customizes a frozen",
        "Segment Anything Model for the task above. SAM's weights are not included or changed.",
        "",
        f"- Base model type: `{base.model_type or 'unknown'}`",
        f"- Base fingerprint (prompt encoder + mask decoder): `{base.fingerprint or 'unknown'}`",
        f"- Prompt types used in training: {', '.join(config.prompt_types)}",
        f"- samplm version: {config.samplm_version or 'unknown'}",
        "",
        "## Usage",
        "",
        "```python",
        *_build_base_lines(base.model_type),
        f'predictor.load_adapter("{load_name}", adapter_name="{config.task}")',
        "predictor.set_image(image)",
        "masks, scores, logits = predictor.predict(point_coords=points, point_labels=labels)",
        "```",
    ]
    selection = config.metadata.get("selection") if isinstance(config.metadata, dict) else None
    if isinstance(selection, str) and selection:
        body += ["", "## How it was chosen", "", selection]
    if isinstance(metrics, dict) and metrics:
        body += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        body += [f"| {name} | {value} |" for name, value in metrics.items()]
    return "\n".join(front + body) + "\n"
