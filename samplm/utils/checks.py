"""Typed range checks and one-line error text, shared by configs, the command line and the Hub client.

:class:`Limit` states the type and range of a setting; :func:`check_limits` applies limits to a
dataclass's fields and raises :class:`~samplm.errors.ConfigError` naming the field.
:func:`first_line` and :func:`shown` keep error messages to one short line; :func:`printable` escapes
text read from files (names, config strings) before it reaches a terminal or a log.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, printable


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Limit:
    """The type and range of one numeric setting.

    Attributes:
        kind: ``int`` (integers only, not bools) or ``float`` (any finite real number, not bools).
        low, high: inclusive bounds (``None``: unbounded).
        low_open, high_open: exclude ``low`` / ``high`` themselves (``> low``, ``< high``).
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        """``"an integer in [1, 8192]"``, ``"a finite number > 0"``, ..."""
        noun = "an integer" if self.kind is int else "a finite number"
        if self.low is None or self.high is None:
            parts = [f"{'>' if self.low_open else '>='} {_number(self.low)}"] if self.low is not None else []
            parts += (
                [f"{'<' if self.high_open else '<='} {_number(self.high)}"] if self.high is not None else []
            )
            return " ".join([noun, *parts]).strip()
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{noun} in {left}{_number(self.low)}, {_number(self.high)}{right}"

    def check(self, name: str, value: Any) -> int | float:
        """``value`` as ``kind``; :class:`~samplm.errors.ConfigError` naming ``name`` if it has another
        type or lies out of range."""
        accepted = numbers.Integral if self.kind is int else numbers.Real
        converted: int | float | None = None
        if isinstance(value, accepted) and not isinstance(value, bool):
            with contextlib.suppress(OverflowError):  # a huge integer given for a float setting
                converted = self.kind(value)
        if converted is None or not self.contains(converted):
            raise ConfigError(name, f"must be {self.describe()}, got {shown(value)}")
        return converted

    def contains(self, value: float) -> bool:
        """Whether a number of the right type lies in range (and is finite)."""
        if isinstance(value, float) and not math.isfinite(value):
            return False
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return not (too_low or too_high)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if the message is empty), with any
    control character left in it escaped (:func:`printable`)."""
    text = str(exc).strip()
    return printable(text.splitlines()[0]) if text else type(exc).__name__


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: one short line in an error message."""
    try:
        text = repr(value)
    except ValueError:  # an integer too long to print
        text = f"<a {type(value).__name__} too long to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_limits(obj: Any, section: str, limits: dict[str, Limit]) -> None:
    """Check (and normalise: ``int`` -> ``float`` where a float is expected) the fields of a dataclass
    instance named in ``limits``; errors name ``section.field`` (``field`` when ``section`` is empty)."""
    for name, limit in limits.items():
        # (object.__setattr__: frozen dataclasses normalise their fields in __post_init__ too)
        object.__setattr__(obj, name, limit.check(qualified(section, name), getattr(obj, name)))


def qualified(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name
