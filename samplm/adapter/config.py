"""``adapter_config.json``: what an adapter is, what it was trained against, and how to rebuild it.

Example (format version 2)::

    {
      "format": "samplm-adapter",
      "format_version": 2,
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
import re
from dataclasses import dataclass, field
from typing import Any

from ..constants import ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION, SUPPORTED_FORMAT_VERSIONS
from ..errors import AdapterFormatError, ConfigError
from ..utils.checks import Limit, check_limits, qualified, shown

PROMPT_TYPES = ("point", "box", "mask")
PLM_ACTIVATIONS = ("relu", "gelu")
#: Upper bounds of the hyper-parameters: far above any sensible adapter, far below an allocation that
#: takes the machine down (checked before any module is built).
MAX_WIDTH = 8192
MAX_HEADS = 256
MAX_DEPTH = 32
MAX_POINTS = 1024
#: Deepest nesting accepted in ``metadata`` (deeper structures break JSON and ``dataclasses.asdict``).
MAX_METADATA_DEPTH = 32
#: Longest task name.
MAX_TASK_LENGTH = 96
#: A task name: ASCII letters, digits, ``_``, ``-``, ``.``, ``+`` and inner spaces, starting with a letter,
#: digit or ``_`` and not ending with a space; no path separators, no control characters.
TASK_PATTERN = re.compile(
    rf"[A-Za-z0-9_](?:[A-Za-z0-9_.+ -]{{0,{MAX_TASK_LENGTH - 2}}}[A-Za-z0-9_.+-])?", re.ASCII
)


def check_task_name(value: Any, name: str = "task") -> str:
    """``value`` if it is a task name (:data:`TASK_PATTERN`), else a one-line :class:`ConfigError` naming
    ``name`` (a task names an adapter in lists and pages; it is never a path)."""
    if not isinstance(value, str) or not TASK_PATTERN.fullmatch(value):
        raise ConfigError(
            name,
            f"must be 1 to {MAX_TASK_LENGTH} letters, digits and _ - . + (inner spaces allowed), starting "
            f"with a letter, digit or _; got {shown(value)}: choose a name such as 'nose' or 'license_plate'",
        )
    return value


def _check_optional_strings(obj: Any, section: str, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(qualified(section, name), f"must be a string or null, got {shown(value)}")


def _depth(value: Any) -> int:
    """Nesting depth of JSON-like lists and dicts, computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            deepest = max(deepest, depth)
            if depth <= MAX_METADATA_DEPTH:
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


_WIDTH = Limit(int, 1, MAX_WIDTH)
PLM_LIMITS = {
    "embed_dim": _WIDTH,
    "num_heads": Limit(int, 1, MAX_HEADS),
    "mlp_dim": _WIDTH,
    "attention_downsample_rate": _WIDTH,
}
PMM_LIMITS = {
    "in_dim": _WIDTH,
    "hidden_dim": _WIDTH,
    "num_heads": Limit(int, 1, MAX_HEADS),
    "mlp_dim": _WIDTH,
    "depth": Limit(int, 1, MAX_DEPTH),
    "num_points": Limit(int, 3, MAX_POINTS),
    "dropout": Limit(float, 0, 1),
    "max_offset": Limit(float, 0, None, low_open=True),
}


@dataclass
class PLMConfig:
    """Hyper-parameters of :class:`~samplm.adapter.PromptLearningModule`."""

    embed_dim: int = 256
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 1
    activation: str = "relu"

    def __post_init__(self) -> None:
        check_limits(self, "plm", PLM_LIMITS)
        if self.activation not in PLM_ACTIVATIONS:
            raise ConfigError(
                "plm.activation", f"must be one of {PLM_ACTIVATIONS}, got {shown(self.activation)}"
            )
        internal = self.embed_dim // self.attention_downsample_rate
        if internal < 1 or self.embed_dim % self.num_heads or internal % self.num_heads:
            raise ConfigError(
                f"plm.num_heads={self.num_heads}",
                f"must divide plm.embed_dim={self.embed_dim} and its internal width {internal} "
                f"(embed_dim / attention_downsample_rate)",
            )


@dataclass
class PMMConfig:
    """Hyper-parameters of :class:`~samplm.adapter.PointMatchingModule`."""

    in_dim: int = 256
    hidden_dim: int = 128
    num_heads: int = 8
    mlp_dim: int = 1024
    depth: int = 3
    num_points: int = 20
    dropout: float = 0.1
    max_offset: float = 16.0

    def __post_init__(self) -> None:
        check_limits(self, "pmm", PMM_LIMITS)
        if self.hidden_dim % self.num_heads:
            raise ConfigError(
                f"pmm.num_heads={self.num_heads}", f"must divide pmm.hidden_dim={self.hidden_dim}"
            )


@dataclass
class BaseModelInfo:
    """The base model an adapter was trained against.

    Attributes:
        model_type: the base's ``--model-type`` (``"vit_h"``, ``"sam2.1_hiera_tiny"``, ``"hf"``, ...).
        fingerprint: the base's fingerprint (its prompt encoder + mask decoder weights,
            :func:`samplm.utils.fingerprint.sam_fingerprint` for SAM 1).
        checkpoint: file name of the checkpoint (informational).
        family: the base family (``"sam"``, ``"sam2"``, ...; see :data:`samplm.base.FAMILY_NAMES`). ``None``
            in files written before families existed, which were all trained on SAM 1 (``"sam"``); an
            adapter that records no base at all (never bound, untrained) runs on any family.
    """

    model_type: str | None = None
    fingerprint: str | None = None
    checkpoint: str | None = None
    family: str | None = None

    def __post_init__(self) -> None:
        _check_optional_strings(self, "base_model", ("model_type", "fingerprint", "checkpoint", "family"))


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
        sections = {"plm": PLMConfig, "pmm": PMMConfig, "base_model": BaseModelInfo}
        for name, section_cls in sections.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, section_cls(**_checked_fields(section_cls, value, name)))
            elif not (isinstance(value, section_cls) or (name == "pmm" and value is None)):
                raise ConfigError(name, f"must be a JSON object, got {shown(value)}")
        check_task_name(self.task)
        types = self.prompt_types
        if not isinstance(types, list | tuple) or not types or not set(map(str, types)) <= set(PROMPT_TYPES):
            raise ConfigError(
                "prompt_types", f"must be a non-empty list of {PROMPT_TYPES}, got {shown(types)}"
            )
        _check_optional_strings(self, "", ("samplm_version", "weights_sha256"))
        if not isinstance(self.metadata, dict):
            raise ConfigError("metadata", f"must be a JSON object, got {type(self.metadata).__name__}")
        if _depth(self.metadata) > MAX_METADATA_DEPTH:
            raise ConfigError("metadata", f"is nested more than {MAX_METADATA_DEPTH} levels deep")

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
            raise AdapterFormatError(source, f"'format' must be {ADAPTER_FORMAT!r}, got {shown(fmt)}")
        integer = isinstance(version, int) and not isinstance(version, bool)  # not 2.0, not true
        if not integer or version not in SUPPORTED_FORMAT_VERSIONS:
            raise AdapterFormatError(
                source,
                f"format_version {shown(version)} is not supported by this samplm "
                f"(supported: {list(SUPPORTED_FORMAT_VERSIONS)}); upgrade samplm",
            )
        try:
            return cls(**_checked_fields(cls, data, "config"))
        except (TypeError, ValueError) as exc:
            raise AdapterFormatError(source, str(exc)) from exc


def _checked_fields(cls: type, data: dict[Any, Any], section: str) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``; unknown keys are a :class:`ConfigError`
    (types and ranges are checked by the dataclass itself)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(key) for key in data if key not in names)
    if unknown:
        raise ConfigError(section, f"has unknown key(s) {unknown}; expected some of {sorted(names)}")
    return dict(data)
