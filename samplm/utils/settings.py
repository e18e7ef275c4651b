"""Settings as data: the ``metadata`` of a settings dataclass's fields (help text, allowed values, range).

The jobs' settings (:class:`~samplm.train.settings.TrainConfig`, :class:`~samplm.eval.settings.EvalSettings`,
...) are dataclasses; each field's type, default and :func:`about` metadata is all the ``samplm`` command
needs to make its flag and config-file key (:mod:`samplm.cli.options`)::

    @dataclass(frozen=True)
    class Settings:
        visuals: int = field(default=3, metadata=about("instances drawn (default 3)", limit=Limit(int, 0)))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .checks import Limit


def about(
    help: str | None = None,
    *,
    choices: Sequence[str] | None = None,
    limit: Limit | None = None,
    nargs: str | None = None,
) -> dict[str, Any]:
    """A settings field's ``metadata``: its help text, allowed values, range (of each value) and, for a
    list, the flag's ``nargs`` (default ``"+"``)."""
    return {"help": help, "choices": choices, "limit": limit, "nargs": nargs}


def field_limits(cls: type) -> dict[str, Limit]:
    """``{field name: Limit}`` of the fields of the settings dataclass ``cls`` that state a range."""
    return {f.name: f.metadata["limit"] for f in dataclasses.fields(cls) if f.metadata.get("limit")}


def field_choices(cls: type) -> dict[str, Sequence[str]]:
    """``{field name: allowed values}`` of the fields of ``cls`` that state them."""
    return {f.name: f.metadata["choices"] for f in dataclasses.fields(cls) if f.metadata.get("choices")}
