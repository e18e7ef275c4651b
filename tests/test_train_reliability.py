"""Training state fails loudly: verified checkpoints, one run per ``--out`` (lock), resume only with the
same optimisation settings, ``metrics.jsonl`` without repeated steps, and no NaN reaching an adapter.

All runs use test_train.py's rectangle task on the tiny SAM; a run paused after step 3 of 6 (checkpoint
at step 3) is made once and copied by each test.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil

import pytest
import test_train
import torch

from samplm import AdapterConfig
from samplm.base import ImageFeatures
from samplm.errors import (
    CheckpointError,
    NonFiniteError,
    ResumeMismatchError,
    RunLockedError,
    SamplmError,
)
from samplm.train import checkpoints, trainer
from samplm.train.outputs import export_adapter
from samplm.train.run_setup import new_adapter
from samplm.train.trainer import train
from samplm.utils.files import lock_directory

_config = test_train._config
task = test_train.task  # the module-scoped rectangle task: (train set, val set)


@pytest.fixture(scope="module")
def paused(tmp_path_factory, tiny_sam, task):
    """An output directory of a 6-step run stopped after step 3 (checkpoint and metrics up to step 3)."""
    out = tmp_path_factory.mktemp("paused") / "run"
    train(copy.deepcopy(tiny_sam), task[0], out, config=_config(), progress=False, stop_after=3)
    return out


@pytest.fixture()
def run_dir(paused, tmp_path):
    """A private copy of the paused run."""
    return shutil.copytree(paused, tmp_path / "run")


def _train(sam, task, out, config=None, **kwargs):
    """``train`` on the rectangle task without validation or progress bar."""
    return train(copy.deepcopy(sam), task[0], out, config=config or _config(), progress=False, **kwargs)


def _steps(out) -> list[int]:
    """The steps of the loss lines in ``out/metrics.jsonl``."""
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return [x["step"] for x in lines if "loss" in x]


def _flip(data: bytes) -> bytes:
    """Flip 16 bytes in the middle (tensor data: the optimiser's moments)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]


@pytest.mark.parametrize(
    "damage",
    [_flip, lambda data: data[: len(data) // 2], lambda data: b"not a checkpoint"],
    ids=["flipped", "truncated", "garbage"],
)
def test_damaged_checkpoint_fails_with_one_clear_error(run_dir, tiny_sam, task, damage):
    checkpoint = run_dir / "checkpoints" / "last.pt"
    recorded = (run_dir / "checkpoints" / "last.pt.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(checkpoint.read_bytes()).hexdigest()  # sha256sum format
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    with pytest.raises(CheckpointError) as info:
        _train(tiny_sam, task, run_dir)
    assert isinstance(info.value, SamplmError)
    assert str(checkpoint) in str(info.value) and "--no-resume" in str(info.value)
    if damage is _flip:
        assert _train(tiny_sam, task, run_dir, resume=False).steps == 6  # the suggested way out works


def test_interrupted_checkpoint_save_keeps_the_previous_checkpoint(run_dir, tiny_sam, task, monkeypatch):
    original = checkpoints.atomic_write

    def crash_on_checkpoint(path, write):
        if path.name == "last.pt":
            raise OSError("disk full")  # after the checksum file was updated, before the rename
        return original(path, write)

    monkeypatch.setattr(checkpoints, "atomic_write", crash_on_checkpoint)
    with pytest.raises(OSError, match="disk full"):
        _train(tiny_sam, task, run_dir)
    monkeypatch.setattr(checkpoints, "atomic_write", original)
    assert _train(tiny_sam, task, run_dir).steps == 6  # resumed from the step-3 checkpoint
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_checkpoint_without_checksum(run_dir, tiny_sam, task):
    """A checkpoint of samplm 0.1.0 (no checksum file, no settings inside) still resumes, with a
    warning, against ``train_config.json``; a current checkpoint without its checksum file does not."""
    checkpoint = run_dir / "checkpoints" / "last.pt"
    (run_dir / "checkpoints" / "last.pt.sha256").unlink()
    with pytest.raises(CheckpointError, match="no checksum file"):
        _train(tiny_sam, task, run_dir)
    payload = torch.load(checkpoint, weights_only=True)
    del payload["config"]
    torch.save(payload, checkpoint)
    with pytest.warns(UserWarning, match="no checksum"), pytest.raises(ResumeMismatchError, match="lr"):
        _train(tiny_sam, task, run_dir, config=_config(lr=2e-3))  # checked against train_config.json
    with pytest.warns(UserWarning, match="no checksum"):
        assert _train(tiny_sam, task, run_dir).steps == 6


def test_resume_refuses_changed_optimisation_settings(run_dir, tiny_sam, task):
    with pytest.raises(ResumeMismatchError) as info:
        _train(tiny_sam, task, run_dir, config=_config(lr=2e-3, steps=8, use_pmm=False))
    message = str(info.value)
    assert isinstance(info.value, SamplmError)
    for change in ("lr: 0.001 -> 0.002", "steps: 6 -> 8", "use_pmm: True -> False"):
        assert change in message
    assert "--no-resume" in message and "--out" in message and str(run_dir) in message
    assert json.loads((run_dir / "train_config.json").read_text())["lr"] == 1e-3  # not overwritten
    free = _config(val_every=2, log_every=2, checkpoint_every=2, val_max_instances=3)
    assert _train(tiny_sam, task, run_dir, config=free).steps == 6
    assert json.loads((run_dir / "train_config.json").read_text())["log_every"] == 2


def test_metrics_keep_no_repeated_steps_after_a_resume(run_dir, tiny_sam, task, monkeypatch):
    original = trainer._step

    def killed_during_step_5(run):
        totals = original(run)
        if run.state["step"] == 5:
            raise KeyboardInterrupt  # step 4 was logged; the last checkpoint is step 3's
        return totals

    monkeypatch.setattr(trainer, "_step", killed_during_step_5)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_sam, task, run_dir)
    assert _steps(run_dir) == [1, 2, 3, 4]
    monkeypatch.setattr(trainer, "_step", original)
    assert _train(tiny_sam, task, run_dir).steps == 6  # the lock was released by the interrupt
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_no_resume_starts_the_metrics_afresh(run_dir, tiny_sam, task):
    assert _train(tiny_sam, task, run_dir, resume=False).steps == 6
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]


def test_no_resume_deletes_the_older_checkpoint_before_training(run_dir, tiny_sam, task, monkeypatch):
    """A fresh run that dies before its first checkpoint leaves nothing of the older run to resume."""
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert checkpoint.is_file()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_step", crash)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny_sam, task, run_dir, resume=False)
    assert not checkpoint.exists() and not (run_dir / "checkpoints" / "last.pt.sha256").exists()


def test_second_run_on_one_out_fails_at_once(run_dir, tiny_sam, task):
    with lock_directory(run_dir), pytest.raises(RunLockedError) as info:
        _train(tiny_sam, task, run_dir)
    assert str(run_dir) in str(info.value) and f"process {os.getpid()}" in str(info.value)
    assert isinstance(info.value, SamplmError)
    assert _steps(run_dir) == [1, 2, 3]  # the refused run wrote nothing
    with pytest.raises(ResumeMismatchError):  # an error inside the run releases the lock
        _train(tiny_sam, task, run_dir, config=_config(lr=2e-3))
    with lock_directory(run_dir):
        pass
    assert (run_dir / ".lock").is_file()


def test_non_finite_loss_stops_naming_the_batch_images(tmp_path, tiny_sam, task, monkeypatch):
    train_set, _ = task
    poisoned = train_set.items[0].image_path
    clean = train_set.embedding

    def embedding(item):
        features = clean(item)
        if item.image_path != poisoned:
            return features
        return ImageFeatures(torch.full_like(features.embedding, float("nan")), features.high_res)

    monkeypatch.setattr(train_set, "embedding", embedding)
    with pytest.raises(NonFiniteError) as info:
        _train(tiny_sam, task, tmp_path)
    assert str(poisoned) in str(info.value) and "step " in str(info.value)
    assert not (tmp_path / "adapter").exists()


def test_non_finite_adapter_is_never_exported(tmp_path):
    adapter = new_adapter(AdapterConfig(), _config())
    with torch.no_grad():
        adapter.plm.norm_out.weight[3] = float("inf")
    with pytest.raises(NonFiniteError, match=r"step 7.*plm\.norm_out\.weight"):
        export_adapter(adapter, tmp_path, {"step": 7})
    assert not (tmp_path / "adapter").exists()


def test_a_resumed_run_says_from_which_step(run_dir, tiny_sam, task, capsys):
    line = f"resumed from step 3 (checkpoint {run_dir / 'checkpoints' / 'last.pt'})"
    assert _train(tiny_sam, task, run_dir, config=_config(steps=6), stop_after=4).steps == 4
    assert line not in capsys.readouterr().out  # progress=False: quiet
    train(copy.deepcopy(tiny_sam), task[0], run_dir, config=_config(), progress=True)
    printed = capsys.readouterr().out
    assert "resumed from step 4 (checkpoint " in printed and printed.count("resumed from") == 1
    train(copy.deepcopy(tiny_sam), task[0], run_dir, config=_config(), progress=True, resume=False)
    assert "resumed from" not in capsys.readouterr().out  # a fresh run
