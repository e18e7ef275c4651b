"""Thread counts per stage (samplm.utils.threads): the context manager, the policy, ``--threads`` reaching
the stages of a real run, and the busy-machine hint."""

from __future__ import annotations

import io
import os

import pytest
import torch
from conftest import make_adapter, write_rect_dataset
from segment_anything.modeling import MaskDecoder

from samplm.base.cnn_encoder import TinyImageEncoder
from samplm.cache.embeddings import EmbeddingCache
from samplm.cli import main
from samplm.data import read_mask_folder
from samplm.errors import ConfigError
from samplm.eval import samf
from samplm.eval.protocol import InstancePredictor, evaluate
from samplm.train import trainer
from samplm.utils.threads import busy_hint, machine_busy, stage_threads, thread_limit, torch_threads


def test_torch_threads_sets_and_restores_the_count():
    before = torch.get_num_threads()
    with torch_threads(2):
        assert torch.get_num_threads() == 2
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("a failing stage")
    assert torch.get_num_threads() == before
    with torch_threads(None):  # None leaves it alone
        assert torch.get_num_threads() == before


def test_thread_limit_reads_auto_and_positive_integers():
    assert thread_limit(None) is None and thread_limit("auto") is None and thread_limit("AUTO") is None
    assert thread_limit("3") == 3 and thread_limit(2) == 2
    for bad in ("0", "-1", "two", 1.5, True):
        with pytest.raises(ConfigError, match="--threads"):
            thread_limit(bad)


def _load(monkeypatch, load: float, cpus: int = 2) -> None:
    """A machine of ``cpus`` CPUs with this 1-minute load average."""
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))


def test_a_stage_uses_all_threads_and_one_on_a_busy_machine(monkeypatch):
    with torch_threads(2):  # torch's count as the process found it (e.g. all cores)
        _load(monkeypatch, 1.5)
        assert not machine_busy()
        assert stage_threads() == 2 and stage_threads("auto") == 2
        assert stage_threads(1) == 1 and stage_threads(3) == 3  # --threads N: N
        _load(monkeypatch, 2.0)  # at the CPU count: not oversubscribed
        assert stage_threads() == 2
        _load(monkeypatch, 2.7)  # this job's own two threads plus a little: still not oversubscribed
        assert not machine_busy() and stage_threads() == 2
        _load(monkeypatch, 3.0)  # one more runnable job than cores: busy
        assert machine_busy() and stage_threads() == 1
        _load(monkeypatch, 3.9)  # another job on the cores: one thread
        assert machine_busy() and stage_threads() == 1 and stage_threads(2) == 1
        _load(monkeypatch, 1.5)
        with torch_threads(1):  # the user's OMP_NUM_THREADS=1 / torch.set_num_threads(1)
            assert stage_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (_ for _ in ()).throw(OSError("no load average")))
    assert not machine_busy()


def _observe(monkeypatch) -> dict[str, set[int]]:
    """torch's thread count seen inside each stage of a real run: the image encoder, a training step,
    SAM-F's fitting, an evaluation click, and every call of SAM's mask decoder."""
    seen: dict[str, set[int]] = {}
    stages = {
        "encoder": (TinyImageEncoder, "forward"),
        "train step": (trainer, "_step"),
        "SAM-F": (samf, "fit_blend"),
        "eval click": (InstancePredictor, "_predict"),
        "any decoder call": (MaskDecoder, "forward"),
    }
    for name, (owner, attribute) in stages.items():
        seen[name] = set()
        original = getattr(owner, attribute)

        def spy(*args, _original=original, _name=name, **kwargs):
            seen[_name].add(torch.get_num_threads())
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, attribute, spy)
    return seen


def _demo(tmp_path, name: str, *flags: str) -> list[str]:
    out = tmp_path / name
    argv = ["demo", "--model-type", "samplm_tiny", "--images", "5", "--steps", "2", "--batch-size", "2"]
    assert main([*argv, "--out", str(out), *flags]) == 0
    return (out / "eval" / "results.md").read_text(encoding="utf-8").splitlines()


def test_each_stage_decides_when_it_starts_and_threads_1_reaches_every_stage(monkeypatch, tmp_path):
    busy = {"now": False}
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.9,) * 3 if busy["now"] else (0.5,) * 3)
    with torch_threads(2):
        seen = _observe(monkeypatch)
        idle = _demo(tmp_path, "idle")
        assert seen["encoder"] == seen["train step"] == seen["SAM-F"] == seen["eval click"] == {2}

        seen = _observe(monkeypatch)
        original = TinyImageEncoder.forward  # the machine gets busy once the images are encoded

        def encode_then_get_busy(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            busy["now"] = True
            return result

        monkeypatch.setattr(TinyImageEncoder, "forward", encode_then_get_busy)
        _demo(tmp_path, "busy")
        assert seen["encoder"] == {2}  # the encoding stage started on an idle machine
        assert seen["train step"] == seen["SAM-F"] == seen["eval click"] == {1}
        assert torch.get_num_threads() == 2  # restored after the command

        busy["now"] = False
        seen = _observe(monkeypatch)
        one = _demo(tmp_path, "one", "--threads", "1")
        assert all(counts == {1} for counts in seen.values()), seen  # every stage, every decoder call
        assert torch.get_num_threads() == 2
    # thread counts change speed, not results: the same table (mIoU, boundary IoU, AP) both ways
    assert [line for line in idle if "|" in line] == [line for line in one if "|" in line]


def test_an_evaluation_gives_the_same_figures_with_one_or_two_threads(monkeypatch, tmp_path, tiny_sam):
    root = write_rect_dataset(tmp_path, count=4)
    dataset = read_mask_folder(root / "images", root / "masks")
    cache = EmbeddingCache.for_model(tmp_path / "cache", tiny_sam)
    cache.build(tiny_sam, dataset.image_paths(), progress=False)
    adapters = {"object": make_adapter("object")}
    _load(monkeypatch, 0.0)  # an idle machine: the stage uses what it is given
    seen = _observe(monkeypatch)
    figures = []
    for count in (1, 2):
        result = evaluate(tiny_sam, dataset, cache, adapters, progress=False, threads=count)
        figures.append((result.miou, result.biou, [r.iou for r in result.instances]))
    assert seen["eval click"] == {1, 2}
    assert figures[0] == figures[1]


def test_the_busy_hint_needs_a_load_above_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.94, 2.0, 1.0))
    stream = io.StringIO()
    line = busy_hint(stream)
    assert line == stream.getvalue().strip()
    assert line == (
        "samplm: this machine is busy (load 3.9 on 2 CPUs): other jobs slow this one down; "
        "--threads 1 helps when several run at once"
    )
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 5.0, 5.0))  # at the CPU count: not busy
    stream = io.StringIO()
    assert busy_hint(stream) is None and stream.getvalue() == ""


def test_a_heavy_command_prints_the_hint_once_to_stderr(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.9, 3.0, 3.0))
    root = write_rect_dataset(tmp_path / "data", count=4)
    argv = ["eval", "--data", str(root / "masks"), "--images", str(root / "images"), "--format", "masks"]
    argv += ["--model-type", "samplm_tiny", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "e")]
    assert main([*argv, "--sensitivity", "0", "--visuals", "0"]) == 0  # embeds, then evaluates
    err = capsys.readouterr().err
    assert err.count("this machine is busy (load 3.9 on 2 CPUs)") == 1
    assert main(["eval", "--data", str(tmp_path / "none"), *argv[2:]]) == 2  # an input error: one line
    err = capsys.readouterr().err.strip()
    assert err.startswith("samplm: error:") and "\n" not in err
    monkeypatch.setattr(os, "getloadavg", lambda: (1.9, 3.0, 3.0))  # below the CPU count
    assert main([*argv, "--sensitivity", "0", "--visuals", "0"]) == 0
    assert "busy" not in capsys.readouterr().err


def test_threads_is_checked_with_the_other_options(capsys, tmp_path):
    argv = ["embed", "--data", str(tmp_path), "--format", "masks", "--model-type", "samplm_tiny"]
    assert main([*argv, "--threads", "0"]) == 2
    assert "--threads must be auto or a positive integer" in capsys.readouterr().err
