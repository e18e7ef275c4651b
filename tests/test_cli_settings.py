"""Flags and config-file keys generated from the settings dataclasses: one flag per field, no more, and
a field added to a dataclass becomes a flag, a config key and a checked range with no edit to the CLI."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json

import pytest

from samplm import cli
from samplm.cli import build_parser, main
from samplm.cli import common as cli_common
from samplm.cli import options as cli_options
from samplm.data.settings import DataSettings
from samplm.demo import DemoSettings, run_demo
from samplm.eval.run import run_evaluation
from samplm.eval.settings import EvalSettings
from samplm.export.onnx import export_onnx
from samplm.export.settings import ExportSettings
from samplm.prompts.location_prior import PriorSettings
from samplm.segment.generator import AdapterMaskGenerator
from samplm.segment.jobs import segment_images
from samplm.segment.settings import FitPrototypeSettings, SegmentSettings
from samplm.train.job_settings import TrainJobSettings
from samplm.train.settings import TrainConfig
from samplm.utils.checks import Limit
from samplm.utils.settings import about
from samplm.workspace import ModelSettings

# command -> (the module that names each settings class, the class, fields that are not its flags)
COMMAND_SETTINGS = {
    "embed": [(cli_common, DataSettings, ()), (cli_common, ModelSettings, ())],
    "train": [
        (cli_common, DataSettings, ()),
        (cli_common, ModelSettings, ()),
        (cli.train, TrainJobSettings, ()),
        (cli.train, TrainConfig, ("extra",)),
    ],
    "eval": [
        (cli_common, DataSettings, ()),
        (cli_common, ModelSettings, ()),
        (cli.evaluate, EvalSettings, ()),
    ],
    "demo": [
        (cli.demo, DemoSettings, ()),
        (cli.demo, ModelSettings, ("model_type", "checkpoint", "cache", "device")),  # only --threads
    ],
    "segment": [(cli.segment, SegmentSettings, ()), (cli_common, ModelSettings, ("cache",))],
    "fit-prototype": [(cli.prototype, FitPrototypeSettings, ()), (cli_common, ModelSettings, ("cache",))],
    "export": [(cli.export, ExportSettings, ()), (cli_common, ModelSettings, ("cache",))],
}
# Flags that are not fields of a settings class.
NOT_SETTINGS = {"help", "debug", "config"}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _fields(command: str) -> list[str]:
    names = []
    for _, cls, skip in COMMAND_SETTINGS[command]:
        names += [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    return names


@pytest.mark.parametrize("command", sorted(COMMAND_SETTINGS))
def test_the_flags_of_a_command_are_the_fields_of_its_settings(command):
    parser = _parsers()[command]
    dests = [a.dest for a in parser._actions if a.dest not in NOT_SETTINGS]
    assert dests == _fields(command)  # the fields' order, each once
    for action in parser._actions:
        if action.dest not in NOT_SETTINGS:
            assert action.option_strings[0] == "--" + action.dest.replace("_", "-")
            assert action.help, action.dest
    assert set(parser.get_default("config_keys")) >= set(_fields(command))


def test_config_keys_and_limits_come_from_the_fields():
    parsers = _parsers()
    assert parsers["eval"].get_default("config_limits")["samf_steps"] == Limit(int, 1)
    assert parsers["train"].get_default("config_limits")["pmm_points"] == Limit(int, 3, 1024)
    assert "images" not in parsers["eval"].get_default("config_limits")  # a folder there
    assert parsers["demo"].get_default("config_limits")["images"] == Limit(int, 1)  # a count here
    shared = {"embed", "train", "eval"}
    keys = {name: set(parsers[name].get_default("config_keys")) for name in shared}
    assert keys["embed"] == keys["train"] == keys["eval"] == set().union(*map(_fields, shared))


def _extended(cls):
    """``cls`` with one more setting: an integer of at least 1."""
    return dataclasses.make_dataclass(
        f"Extended{cls.__name__}",
        [("new_knob", int, dataclasses.field(default=1, metadata=about("a new knob", limit=Limit(int, 1))))],
        bases=(cls,),
        frozen=cls.__dataclass_params__.frozen,
    )


@pytest.mark.parametrize(
    ("command", "index"),
    [(command, i) for command, entries in COMMAND_SETTINGS.items() for i in range(len(entries))],
)
def test_a_field_added_to_settings_is_a_flag_and_a_config_key(monkeypatch, capsys, tmp_path, command, index):
    module, cls, _ = COMMAND_SETTINGS[command][index]
    monkeypatch.setattr(module, cls.__name__, _extended(cls))
    assert build_parser().parse_args([command, "--new-knob", "7"]).new_knob == 7
    assert main([command, "--new-knob", "0"]) == 2
    assert "--new-knob must be an integer >= 1, got 0" in capsys.readouterr().err
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"new_knob": 0}))
    assert main([command, "--config", str(config)]) == 2
    assert f"new_knob in {config} must be an integer >= 1, got 0" in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class _Kinds:
    on: bool = True
    off: bool = False
    many: tuple[float, ...] = (0.5,)
    names: list[str] | None = dataclasses.field(default=None, metadata=about("names", nargs="*"))
    count: int | None = dataclasses.field(default=None, metadata=about("count", limit=Limit(int, 0)))
    mode: str = dataclasses.field(default="a", metadata=about("mode", choices=("a", "b")))
    table: dict[str, int] = dataclasses.field(default_factory=dict)


def test_each_kind_of_field_makes_its_kind_of_flag():
    parser = cli_options.Parser(prog="t")
    cli_options.add_settings(parser, _Kinds, default_word="paper")
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert list(actions) == ["on", "off", "many", "names", "count", "mode"]  # a dict is not an option
    assert actions["on"].option_strings == ["--on", "--no-on"] and actions["on"].help == "paper: True"
    assert actions["off"].option_strings == ["--off"] and actions["off"].nargs == 0
    assert (actions["many"].nargs, actions["many"].type, actions["many"].help) == ("+", float, "paper: 0.5")
    assert actions["names"].nargs == "*" and actions["names"].type is None
    assert actions["count"].type is int and actions["mode"].choices == ("a", "b")
    assert parser.get_default("config_limits") == {"count": Limit(int, 0)}
    args = parser.parse_args(["--no-on", "--many", "1", "2", "--count", "3", "--mode", "b"])
    assert (args.on, args.off, args.many, args.count, args.mode) == (False, None, [1.0, 2.0], 3, "b")
    settings = cli_options.settings_from(_Kinds, {**vars(args), "unrelated": 1})
    assert settings.on is False and settings.count == 3


def _defaults(function) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_settings_defaults_are_the_library_defaults():
    demo = _defaults(run_demo)
    for item in dataclasses.fields(DemoSettings):
        if item.name not in ("backgrounds", "device"):  # folders there, photos here; None: a GPU if any
            assert item.default == demo[item.name], item.name
    assert EvalSettings().protocol() == {
        k: v for k, v in _defaults(run_evaluation).items() if k in EvalSettings().protocol()
    }
    generator = _defaults(AdapterMaskGenerator.__init__)
    segment = SegmentSettings()
    assert segment.generator_options() == {k: generator[k] for k in segment.generator_options()}
    assert segment.prior() == PriorSettings()
    assert segment.max_pixels == _defaults(segment_images)["max_pixels"]
    export = _defaults(export_onnx)
    assert all(getattr(ExportSettings(), k) == export[k] for k in ("return_single_mask", "opset", "quantize"))
