"""Options from settings dataclasses: flags, config files, typed and range-checked values.

:func:`add_settings` makes one flag per field of a settings dataclass (``TrainConfig``, ``EvalSettings``,
...), so a field added to one is a flag and a config-file key with no edit here. :func:`merged_options`
reads ``--config FILE``, lets the flags given override it, and types and checks every value (type, choices,
the fields' ranges) before any data is read; errors name the flag (``--lr``) or the key
(``lr in run.yaml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ..adapter.config import check_task_name
from ..errors import ConfigError
from ..utils.checks import Limit, first_line, shown
from ..utils.threads import AUTO, thread_limit
from ..workspace import default_device

T = TypeVar("T")

# Options of the parsers that are not settings of the job itself.
NOT_OPTIONS = {
    "help",
    "version",
    "debug",
    "command",
    "config",
    "config_keys",
    "config_actions",
    "config_limits",
}
_SCALARS = (bool, int, float, str)


class UsageError(Exception):
    """An argument error found by argparse (reported by :func:`samplm.cli.main` as one line)."""


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors become :class:`UsageError` (one line, no usage dump)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


@dataclasses.dataclass(frozen=True)
class Option:
    """A field of a settings dataclass as an option: ``kind`` of each value, ``many`` for a list/tuple."""

    name: str
    default: Any
    kind: type
    many: bool
    metadata: Mapping[str, Any]

    @property
    def flag(self) -> str:
        """``--batch-size`` for ``batch_size``."""
        return "--" + self.name.replace("_", "-")


def _value_type(hint: Any) -> tuple[type, bool] | None:
    """``(kind, many)`` of a field's type: a bool, int, float or str, or a list / tuple of one (each
    optionally ``| None``); ``None`` for any other type (such a field is not an option)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            return None
        hint = args[0]
    if typing.get_origin(hint) in (list, tuple):
        items = [a for a in typing.get_args(hint) if a is not Ellipsis]
        ok = len(items) == 1 and items[0] in _SCALARS and items[0] is not bool
        return (items[0], True) if ok else None
    return (hint, False) if hint in _SCALARS else None


def option_fields(cls: type) -> list[Option]:
    """The fields of the settings dataclass ``cls`` that are options (see :func:`_value_type`), in order,
    with their defaults (a field without one: ``None``)."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        value_type = _value_type(hints[item.name])
        if value_type is None:
            continue
        default = None if item.default is dataclasses.MISSING else item.default
        found.append(Option(item.name, default, *value_type, item.metadata))
    return found


def _flag_arguments(option: Option, default_word: str) -> dict[str, Any]:
    """``add_argument``'s keywords for ``option``: no default (an unset flag is ``None``); a switch that
    is on by default is ``--x`` / ``--no-x``, one that is off ``--x``; a list takes several values."""
    default = option.default
    text = " ".join(map(str, default)) if isinstance(default, tuple) else default
    kwargs: dict[str, Any] = {"help": option.metadata.get("help") or f"{default_word}: {text}"}
    if option.metadata.get("choices") is not None:
        kwargs["choices"] = option.metadata["choices"]
    if option.kind is bool and default is True:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif option.kind is bool:
        kwargs.update(action="store_true", default=None)
    else:
        if option.many:
            kwargs["nargs"] = option.metadata.get("nargs") or "+"
        if option.kind is not str:
            kwargs["type"] = option.kind
    return kwargs


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    title: str | None = None,
    description: str | None = None,
    skip: Iterable[str] = (),
    default_word: str = "default",
) -> argparse._ActionsContainer:
    """One flag per option field of the settings dataclass ``cls`` (but ``skip``), in a group ``title``
    (``None``: the parser's own options); a field without help text says ``{default_word}: {default}``.
    The fields' ranges go into the parser's ``config_limits``. Returns the group, for more options."""
    group = parser.add_argument_group(title, description) if title else parser
    limits = dict(parser.get_default("config_limits") or {})
    for option in option_fields(cls):
        if option.name in skip:
            continue
        group.add_argument(option.flag, dest=option.name, **_flag_arguments(option, default_word))
        if option.metadata.get("limit") is not None:
            limits[option.name] = option.metadata["limit"]
    parser.set_defaults(config_limits=limits)
    return group


def settings_from(cls: type[T], options: Mapping[str, Any]) -> T:
    """A ``cls`` of the values in ``options`` that are its fields (the others keep their defaults)."""
    names = {item.name for item in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in names})


def share_config(parsers: Sequence[argparse.ArgumentParser]) -> None:
    """Let ``parsers`` read one config file: each may hold the options of any of them (``config_keys``),
    typed by their flags (``config_actions``) and checked with their ranges (``config_limits``)."""
    keys: set[str] = set()
    actions: dict[str, argparse.Action] = {}
    limits: dict[str, Limit] = {}
    for parser in parsers:
        for action in parser._actions:
            if action.dest not in NOT_OPTIONS:
                keys.add(action.dest)
                actions.setdefault(action.dest, action)
        limits = {**(parser.get_default("config_limits") or {}), **limits}
    for parser in parsers:
        parser.set_defaults(config_keys=frozenset(keys), config_actions=actions, config_limits=limits)


def merged_options(args: argparse.Namespace) -> dict[str, Any]:
    """Config file values, overridden by flags given on the command line, every value typed and checked
    (before any data is read); errors name the flag (``--lr``) or the file's key (``lr in run.yaml``)."""
    options: dict[str, Any] = {}
    labels: dict[str, str] = {}
    if args.config:
        values = read_config_file(Path(args.config))
        unknown = sorted(set(values) - args.config_keys)
        if unknown:
            raise ValueError(f"unknown option(s) in {args.config}: {unknown}")
        for key, value in values.items():
            labels[key] = f"{key} in {args.config}"
            options[key] = file_value(args.config_actions[key], value, labels[key])
    for key, value in vars(args).items():
        if value is not None and key not in NOT_OPTIONS:
            options[key], labels[key] = value, "--" + key.replace("_", "-")
    for key, value in options.items():
        limit = args.config_limits.get(key)
        if limit is not None:
            checked = [limit.check(labels[key], v) for v in (value if isinstance(value, list) else [value])]
            options[key] = checked if isinstance(value, list) else checked[0]
    check_places(options, labels)
    return options


def check_places(options: dict[str, Any], labels: dict[str, str]) -> None:
    """``--device`` names a device this machine has; ``--threads`` is ``auto`` or a positive integer;
    ``--task`` is a task name; the files and folders to
    write (``--out``, ``--encoder``, ``--web``) do not lie under a file; ``--out`` is not an existing file."""
    if options.get("device"):
        options["device"] = default_device(str(options["device"]))
    if options.get("threads") is not None:
        limit = thread_limit(options["threads"], labels["threads"])
        options["threads"] = AUTO if limit is None else str(limit)
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


def file_value(action: argparse.Action, value: Any, label: str) -> Any:
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
    converted = convert(kind, value) if plain else None
    if converted is None:
        noun = {int: "an integer", float: "a number", str: "a string"}[kind]
        raise ConfigError(label, f"must be {noun}, got {shown(value)}")
    if action.choices is not None and converted not in action.choices:
        raise ConfigError(label, f"must be one of {tuple(action.choices)}, got {shown(value)}")
    return converted


def convert(kind: type, value: int | float | str) -> int | float | str | None:
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


def read_config_file(path: Path) -> dict[str, Any]:
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


def require(options: Mapping[str, Any], *names: str) -> None:
    """Raise ``ValueError`` naming the flags among ``names`` that are unset."""
    missing = [f"--{n.replace('_', '-')}" for n in names if options.get(n) in (None, "")]
    if missing:
        raise ValueError(f"missing required option(s): {', '.join(missing)}")
