"""``adapter_config.json``: what an adapter is, what it was trained against, and how to rebuild it.

Example (format version 1)::

    {
      "format": "samplm-adapter",
      "format_version": 1,
      "task": "nose",
      "plm": {"embed_dim": 256, "num_heads": 8, "mlp_dim": 2048,
              "attention_downsample_rate": 1, "activation": "relu"},
      "pmm": null,
      "prompt_types": ["point"],
      "base_model": {"model_type": "vit_h", "fingerprint": "sha256:...", "checkpoint": null},
      "samplm_version": "0.1.0",
      "weights_sha256": "...",
      "metadata": {"metrics": {"val_miou": 0.82}}
    }
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from .constants import ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION, SUPPORTED_FORMAT_VERSIONS
from .errors import AdapterFormatError

PROMPT_TYPES = ("point", "box", "mask")


@dataclass
class PLMConfig:
    """Hyper-parameters of :class:`~samplm.modeling.PromptLearningModule`."""

    embed_dim: int = 256
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 1
    activation: str = "relu"


@dataclass
class PMMConfig:
    """Hyper-parameters of :class:`~samplm.modeling.PointMatchingModule`."""

    in_dim: int = 256
    hidden_dim: int = 128
    num_heads: int = 8
    mlp_dim: int = 1024
    depth: int = 3
    num_points: int = 20
    dropout: float = 0.1
    max_offset: float = 16.0


@dataclass
class BaseModelInfo:
    """The SAM an adapter was trained against.

    Attributes:
        model_type: ``sam_model_registry`` key (``"vit_h"``, ``"vit_b"``, ...), if known.
        fingerprint: :func:`samplm.fingerprint.sam_fingerprint` of its prompt encoder + mask decoder.
        checkpoint: file name of the checkpoint (informational).
    """

    model_type: str | None = None
    fingerprint: str | None = None
    checkpoint: str | None = None


@dataclass
class AdapterConfig:
    """Everything in ``adapter_config.json`` except the format header.

    Attributes:
        task: short task name (``"nose"``, ``"banner"``); used as the default adapter name.
        plm: PLM hyper-parameters.
        pmm: PMM hyper-parameters, or ``None`` for a PLM-only adapter.
        prompt_types: prompt kinds the adapter was trained with (subset of point, box, mask).
        base_model: the SAM the adapter was trained against.
        samplm_version: version of samplm that wrote the file.
        weights_sha256: hex SHA-256 of the weights file, checked on load; ``None`` when unknown.
        metadata: free JSON (metrics, dataset, training settings).
    """

    task: str = "custom"
    plm: PLMConfig = field(default_factory=PLMConfig)
    pmm: PMMConfig | None = None
    prompt_types: list[str] = field(default_factory=lambda: ["point"])
    base_model: BaseModelInfo = field(default_factory=BaseModelInfo)
    samplm_version: str | None = None
    weights_sha256: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Sections may be given as plain dicts: AdapterConfig(plm={"num_heads": 4}).
        if isinstance(self.plm, dict):
            self.plm = PLMConfig(**self.plm)
        if isinstance(self.pmm, dict):
            self.pmm = PMMConfig(**self.pmm)
        if isinstance(self.base_model, dict):
            self.base_model = BaseModelInfo(**self.base_model)
        unknown = sorted(set(self.prompt_types) - set(PROMPT_TYPES))
        if unknown or not self.prompt_types:
            raise ValueError(f"prompt_types must be a non-empty subset of {PROMPT_TYPES}, got {unknown}")
        if not isinstance(self.task, str) or not self.task:
            raise ValueError("task must be a non-empty string")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"metadata must be a JSON object, got {type(self.metadata).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including the format header."""
        body = dataclasses.asdict(self)
        return {"format": ADAPTER_FORMAT, "format_version": ADAPTER_FORMAT_VERSION, **body}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str | os.PathLike[str] = "<dict>") -> AdapterConfig:
        """Parse and validate; every problem is an :class:`AdapterFormatError` naming ``source``."""
        if not isinstance(data, dict):
            raise AdapterFormatError(source, "the config must be a JSON object")
        data = dict(data)
        fmt = data.pop("format", None)
        version = data.pop("format_version", None)
        if fmt != ADAPTER_FORMAT:
            raise AdapterFormatError(source, f"'format' must be {ADAPTER_FORMAT!r}, got {fmt!r}")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise AdapterFormatError(
                source,
                f"format_version {version!r} is not supported by this samplm "
                f"(supported: {list(SUPPORTED_FORMAT_VERSIONS)}); upgrade samplm",
            )
        sections = {"plm": PLMConfig, "pmm": PMMConfig, "base_model": BaseModelInfo}
        kwargs = _checked_fields(cls, data, source, "config")
        for key, section_cls in sections.items():
            value = kwargs.get(key)
            if value is None and key == "pmm":
                continue
            if not isinstance(value, dict) and key in kwargs:
                raise AdapterFormatError(source, f"'{key}' must be a JSON object, got {value!r}")
            if key in kwargs:
                kwargs[key] = section_cls(**_checked_fields(section_cls, value, source, key))
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise AdapterFormatError(source, str(exc)) from exc


def _checked_fields(
    cls: type, data: dict[str, Any], source: str | os.PathLike[str], section: str
) -> dict[str, Any]:
    """Reject unknown keys and values of the wrong JSON type for a dataclass section."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise AdapterFormatError(source, f"unknown key(s) in {section}: {unknown}")
    for key, value in data.items():
        expected = names[key].type
        if expected in ("int", int) and not (isinstance(value, int) and not isinstance(value, bool)):
            raise AdapterFormatError(source, f"{section}.{key} must be an integer, got {value!r}")
        if expected in ("float", float) and not isinstance(value, int | float):
            raise AdapterFormatError(source, f"{section}.{key} must be a number, got {value!r}")
        if expected in ("str", str) and not isinstance(value, str):
            raise AdapterFormatError(source, f"{section}.{key} must be a string, got {value!r}")
    return dict(data)
