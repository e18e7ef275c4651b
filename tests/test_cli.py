"""The samplm command line: one-line errors, config files, flags from TrainConfig, demo, push."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samplm import PromptAdapter, cli
from samplm.cli import build_parser, main
from samplm.cli import options as cli_options
from samplm.cli import train as cli_train
from samplm.train.settings import TrainConfig


@pytest.fixture()
def rect_data(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(5):
        image = rng.integers(0, 60, (60, 80, 3), dtype=np.uint8)
        mask = np.zeros((60, 80), np.uint8)
        mask[10 + 3 * i : 40 + 3 * i, 10 + 4 * i : 50 + 4 * i] = 1
        image[mask > 0] = (230, 200, 30)
        Image.fromarray(image).save(tmp_path / "images" / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    return tmp_path


def _base(data, tmp_path):
    return [
        "--data",
        str(data / "masks"),
        "--images",
        str(data / "images"),
        "--format",
        "masks",
        "--model-type",
        "samplm_tiny",
        "--cache",
        str(tmp_path / "cache"),
    ]


def _error(capsys, argv, *, one_line: bool = True) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error: ") and "Traceback" not in err
    assert "\n" not in err or not one_line
    return err


def test_errors_are_one_line(capsys, rect_data, tmp_path):
    assert "--out" in _error(capsys, ["train", *_base(rect_data, tmp_path)])
    assert "unknown categories ['dog']" in _error(
        capsys, ["train", *_base(rect_data, tmp_path), "--out", str(tmp_path / "o"), "--category", "dog"]
    )
    assert "--checkpoint is required" in _error(
        capsys,
        [
            "embed",
            "--data",
            str(rect_data / "masks"),
            "--images",
            str(rect_data / "images"),
            "--format",
            "masks",
            "--model-type",
            "vit_b",
        ],
    )
    assert "does not exist" in _error(
        capsys, ["embed", *_base(rect_data, tmp_path), "--data", str(tmp_path / "no")]
    )
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"stepz": 3}))
    assert "unknown option(s)" in _error(capsys, ["train", "--config", str(config)])
    demo = ["demo", "--out", str(tmp_path / "demo"), "--max-banners", "0"]
    assert "max_banners must be >= 1" in _error(capsys, demo)
    assert not (tmp_path / "demo" / "data").exists()  # refused before generating anything
    plates = ["demo", "--task", "plates", "--out", str(tmp_path / "p")]
    assert "needs --data" in _error(capsys, plates)
    missing = [*plates, "--data", str(tmp_path / "nowhere")]
    assert "nowhere" in _error(capsys, missing) and not (tmp_path / "p").exists()


def test_push_rejects_invalid_adapter(capsys, tmp_path):
    err = _error(capsys, ["push", str(tmp_path / "nothing"), "org/repo"], one_line=False)
    assert "Could not find adapter" in err and "(does not exist)" in err  # lists every place tried


def test_embed_then_train_end_to_end(capsys, rect_data, tmp_path):
    assert main(["embed", *_base(rect_data, tmp_path)]) == 0
    assert "5 embedded, 0 already cached" in capsys.readouterr().out
    config = tmp_path / "train.json"
    config.write_text(
        json.dumps({"steps": 4, "batch_size": 2, "val_every": 2, "warmup_steps": 1, "pmm_points": 8})
    )
    out = tmp_path / "run"
    argv = [
        "train",
        *_base(rect_data, tmp_path),
        "--out",
        str(out),
        "--config",
        str(config),
        "--lr",
        "1e-3",
        "--val-fraction",
        "0.4",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 embedded, 3 already cached" in printed and "adapter written to" in printed
    # auto: fast for samplm_tiny, sized to the 3 training instances (explicit settings kept)
    assert "recipe fast for 3 instances: 4 steps of 2, lr 0.001, multimask all" in printed
    assert "validation every 2 steps, patience 6; one validation split" in printed
    adapter = PromptAdapter.load(out / "adapter")
    selected = adapter.config.metadata["metrics"]["selected"]
    assert adapter.config.metadata["selection"] in printed  # the judgement line, printed and kept
    assert adapter.task == "run" and (adapter.pmm is not None) == (selected == "trained")
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["steps"] == 4 and saved["lr"] == 1e-3 and saved["batch_size"] == 2
    assert saved["extra"]["recipe"] == "fast" and saved["multimask"] == "all"
    settings = ["--warmup-steps", "2", "--decay-at", "0.5", "--box-probability", "0.5"]
    assert main([*argv, *settings, "--no-pmm", "--no-resume", "--out", str(tmp_path / "run2")]) == 0
    assert PromptAdapter.load(tmp_path / "run2" / "adapter").pmm is None
    saved = json.loads((tmp_path / "run2" / "train_config.json").read_text())
    assert saved["warmup_steps"] == 2  # the flag overrides the config file's 1
    assert saved["decay_at"] == [0.5] and saved["box_probability"] == 0.5 and saved["use_pmm"] is False
    assert saved["pmm_points"] == 8 and saved["steps"] == 4  # the rest still from the config file


def test_push_command(capsys, hub_env, tmp_path, adapter_factory):
    adapter_factory("nose").save_pretrained(tmp_path / "nose")
    assert main(["push", str(tmp_path / "nose"), "acme/nose-cli", "--token", "hf_x"]) == 0
    assert "/acme/nose-cli/commit/" in capsys.readouterr().out
    assert PromptAdapter.load("acme/nose-cli", cache_dir=tmp_path / "c").task == "nose"


def _subcommands() -> list[str]:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


def test_every_subcommand_is_documented():
    commands = _subcommands()
    assert {"embed", "train", "eval", "demo", "push"} <= set(commands)
    page = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in commands:
        assert f"``{name}``" in cli.__doc__.split("\n\n")[0]
        assert f"## `samplm {name}`" in page


def _setting_argv(name: str, default) -> tuple[list[str], object]:
    """Flags setting the TrainConfig field ``name`` away from / to a value, and the value parsed."""
    flag = "--" + name.replace("_", "-")
    if isinstance(default, bool):
        return [f"--no-{flag[2:]}" if default else flag], not default
    if isinstance(default, tuple):
        return [flag, *map(str, default)], list(default)
    return [flag, str(default)], default


def test_every_train_config_field_is_a_train_flag():
    parser = build_parser()
    for field in dataclasses.fields(TrainConfig):
        if field.name == "extra":
            continue
        argv, expected = _setting_argv(field.name, getattr(TrainConfig(), field.name))
        assert getattr(parser.parse_args(["train", *argv]), field.name) == expected, field.name
    assert build_parser().parse_args(["train", "--no-pmm", "--seed", "3"]).seed == 3  # older flags kept


def test_a_new_train_config_field_needs_no_cli_edit(monkeypatch, capsys, tmp_path):
    @dataclasses.dataclass
    class Extended(TrainConfig):
        new_knob: float = 0.5

    monkeypatch.setattr(cli_train, "TrainConfig", Extended)
    assert build_parser().parse_args(["train", "--new-knob", "2"]).new_knob == 2.0
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"new_knob": 3}))
    assert "missing required option(s)" in _error(capsys, ["train", "--config", str(config)])


def test_config_keys_are_checked_per_command(capsys, tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"steps": 3, "samf_steps": 5}))  # train and eval keys: one shared file
    for command in ("embed", "train", "eval"):
        assert "missing required option(s)" in _error(capsys, [command, "--config", str(config)])
    config.write_text(json.dumps({"max_banners": 2}))  # a demo option
    assert "unknown option(s)" in _error(capsys, ["train", "--config", str(config)])
    config.write_text(json.dumps({"warmup_steps": 2}))  # a training setting the demo does not take
    assert "['warmup_steps']" in _error(capsys, ["demo", "--config", str(config)])


def test_demo_config_file_and_flags_override_it(capsys, tmp_path):
    config = tmp_path / "demo.json"
    config.write_text(json.dumps({"task": "plates", "out": str(tmp_path / "p")}))
    assert "needs --data" in _error(capsys, ["demo", "--config", str(config)])
    flags = ["demo", "--config", str(config), "--task", "banners", "--max-banners", "0"]
    assert "max_banners must be >= 1" in _error(capsys, flags)
    config.write_text(json.dumps({"model_type": "vit_b"}))
    assert "--checkpoint is required" in _error(capsys, ["demo", "--config", str(config)])
    assert not (tmp_path / "p").exists()


def test_demo_runs_from_a_yaml_config(capsys, tmp_path):
    pytest.importorskip("yaml")
    out = tmp_path / "demo"
    config = tmp_path / "demo.yaml"
    config.write_text(
        f"model_type: samplm_tiny\nimages: 6\nsteps: 2\nbatch-size: 2\nout: {out}\ncache: {tmp_path / 'c'}\n"
    )
    assert main(["demo", "--config", str(config), "--steps", "3"]) == 0
    assert "base: samplm_tiny" in capsys.readouterr().out
    assert len(list((out / "data" / "images").rglob("*.png"))) == 6
    saved = json.loads((out / "train" / "train_config.json").read_text())
    assert (
        saved["steps"] == 3 and saved["batch_size"] == 2
    )  # the flag over the file; the file over the recipe
    assert (tmp_path / "c").is_dir() and not (out / "cache").exists()


# ---------------------------------------------------------------- input errors (issue 13)


def test_version(capsys):
    from samplm import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"samplm {__version__}"


def test_debug_shows_the_traceback(capsys, tmp_path):
    argv = ["train", "--data", str(tmp_path / "no"), "--format", "masks", "--model-type", "samplm_tiny"]
    assert "--out" in _error(capsys, argv)
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(ValueError, match="--out"):
            main(debug_argv)


def test_argument_errors_are_one_line(capsys):
    assert "--lr" in _error(capsys, ["train", "--lr", "abc"])
    assert "--format" in _error(capsys, ["embed", "--format", "png"])
    assert "COMMAND" in _error(capsys, [])


def _nowhere(tmp_path, command="train"):
    """Arguments whose data does not exist: an option error must be reported before the data is read."""
    return [
        command,
        "--data",
        str(tmp_path / "nowhere"),
        "--format",
        "coco",
        "--model-type",
        "samplm_tiny",
        "--out",
        str(tmp_path / "out"),
    ]


@pytest.mark.parametrize(
    ("command", "flags", "match"),
    [
        ("train", ["--device", "bogus"], "--device 'bogus' is not a torch device"),
        ("eval", ["--device", "cuda"], "--device cuda: no CUDA GPU"),
        ("train", ["--device", "cuda:1"], "--device cuda:1: no CUDA GPU"),
        ("train", ["--seed", "-1"], "--seed must be an integer in [0, 4294967295], got -1"),
        ("eval", ["--seed", "-1"], "--seed must be an integer"),
        ("train", ["--lr", "inf"], "--lr must be a finite number > 0, got inf"),
        ("train", ["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
        ("train", ["--steps", "0"], "--steps must be an integer >= 1"),
        ("train", ["--batch-size", "0"], "--batch-size must be an integer >= 1"),
        ("train", ["--val-fraction", "1.5"], "--val-fraction"),
        ("train", ["--decay-at", "0.5", "2"], "--decay-at"),
        ("train", ["--pmm-points", "100000"], "--pmm-points must be an integer in [3, 1024]"),
        ("eval", ["--max-instances", "0"], "--max-instances must be an integer >= 1"),
        ("eval", ["--samf-steps", "-5"], "--samf-steps must be an integer >= 1"),
        ("eval", ["--visuals", "-1"], "--visuals"),
    ],
)
def test_option_values_are_checked_before_the_data_is_read(
    capsys, monkeypatch, tmp_path, command, flags, match
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    err = _error(capsys, [*_nowhere(tmp_path, command), *flags])
    assert match in err and "nowhere" not in err


def test_out_that_is_a_file(capsys, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    err = _error(capsys, [*_nowhere(tmp_path), "--out", str(target)])
    assert "--out" in err and "is a file" in err


def test_garbage_checkpoint(capsys, rect_data, tmp_path):
    garbage = tmp_path / "sam.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    for model_type in ("vit_b", "samplm_tiny"):
        argv = [
            "embed",
            *_base(rect_data, tmp_path),
            "--model-type",
            model_type,
            "--checkpoint",
            str(garbage),
        ]
        err = _error(capsys, argv)
        assert "--checkpoint" in err and str(garbage) in err and model_type in err


def _write_yaml(tmp_path, text):
    pytest.importorskip("yaml")
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def test_yaml_numeric_strings_are_read_with_the_options_type(tmp_path):
    path = _write_yaml(tmp_path, "lr: 1e-4\nsteps: 2e3\nseed: '3'\ndecay_at: 0.5\nval_fraction: 2.5e-1\n")
    options = cli_options.merged_options(build_parser().parse_args(["train", "--config", str(path)]))
    assert options["lr"] == 1e-4 and isinstance(options["lr"], float)
    assert options["steps"] == 2000 and isinstance(options["steps"], int) and options["seed"] == 3
    assert options["decay_at"] == [0.5] and options["val_fraction"] == 0.25


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("lr: fast\n", "lr in "),
        ("lr: .nan\n", "lr in "),
        ("val_every: 0\n", "val_every in "),
        ("grad_accum: 2.5\n", "grad_accum in "),
        ("pmm_points: 100000\n", "pmm_points in "),
        ("use_pmm: 'false'\n", "use_pmm in "),
        ("no_pmm: 1\n", "no_pmm in "),
        ("center_power: -1\n", "center_power in "),
        ("box_probability: -0.5\n", "box_probability in "),
        ("box_jitter: -1\n", "box_jitter in "),
        ("extra_points: -2\n", "extra_points in "),
        ("multimask: some\n", "multimask in "),
        ("format: png\n", "format in "),
        ("decay_at: [0.5, x]\n", "decay_at in "),
        ("seed: -1\n", "seed in "),
        ("max_instances: 0\n", "max_instances in "),
        ("category: {a: 1}\n", "category in "),
    ],
)
def test_config_file_values_are_typed_and_named(capsys, tmp_path, text, match):
    path = _write_yaml(tmp_path, text)
    err = _error(capsys, [*_nowhere(tmp_path), "--config", str(path)])
    assert match + str(path) in err and "nowhere" not in err


def test_push_to_an_unreachable_hub_is_one_line(capsys, monkeypatch, tmp_path, adapter_factory):
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    adapter_factory("nose").save_pretrained(tmp_path / "nose")
    assert main(["push", str(tmp_path / "nose"), "acme/nose-offline", "--token", "hf_x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error: ") and "\n" not in err and "Traceback" not in err, err
