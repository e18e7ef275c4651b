"""Saving and resuming a run's state: ``checkpoints/last.pt``, verified by its SHA-256.

A checkpoint holds the adapter, optimiser and scheduler states, the loop state (:data:`STATE_KEYS`) and
the settings; with the loop's random streams seeded by (seed, step, process) that is all a resumed run
needs to continue exactly. :func:`resume_run` starts a run from it: the checksum is verified, the
optimisation settings must be the checkpoint's (:data:`RESUMABLE_CHANGES` may differ), and
``metrics.jsonl`` is cut back to the step resumed from.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..adapter.prompt_adapter import with_older_format_defaults
from ..errors import CheckpointError, ResumeMismatchError
from ..utils.files import atomic_write, atomic_write_text, checksum_path, read_checksums, write_checksums
from .judge import Judgement
from .metrics_log import METRICS_NAME, trim_metrics
from .settings import TrainConfig

if TYPE_CHECKING:
    from .run_setup import TrainingRun

CHECKPOINT_NAME = "last.pt"
CONFIG_NAME = "train_config.json"
#: Settings that may differ when a run resumes: they change what is logged, validated and saved, not
#: the optimisation (``extra`` holds notes such as the recipe's name).
RESUMABLE_CHANGES = frozenset(
    {
        "val_every",
        "val_max_instances",
        "readout_min_instances",
        "checkpoint_every",
        "log_every",
        "patience",
        "extra",
    }
)
#: The loop's state in a checkpoint; ``judgement``, ``stale`` and ``stopped`` are absent from checkpoints
#: of runs that did not judge candidates and take these values then.
STATE_DEFAULTS: dict[str, Any] = {"judgement": None, "stale": 0, "stopped": False}
STATE_KEYS = ("step", "best", "best_metrics", *STATE_DEFAULTS)


def resume_run(run: TrainingRun, resume: bool) -> bool:
    """Continue from the checkpoint if ``resume`` and one exists (same optimisation settings only; without
    ``resume`` an existing checkpoint is deleted), then record the settings and keep the ``metrics.jsonl``
    lines up to the step the run starts from. Returns whether the run was resumed from a checkpoint."""
    resumed = resume and run.checkpoint.is_file()
    if resumed:
        load_checkpoint(run)
    elif not resume and run.procs.is_main:  # a fresh run: an older checkpoint must never be resumed later
        for stale in (run.checkpoint, checksum_path(run.checkpoint)):
            stale.unlink(missing_ok=True)
    if run.procs.is_main:
        atomic_write_text(run.out / CONFIG_NAME, run.config.to_json())
        trim_metrics(run.out / METRICS_NAME, run.state["step"])
    return resumed


def resumed_line(run: TrainingRun) -> str:
    """The line training prints when it resumes: ``resumed from step N (checkpoint PATH)``."""
    return f"resumed from step {run.state['step']} (checkpoint {run.checkpoint})"


def save_checkpoint(run: TrainingRun) -> None:
    """Write ``checkpoints/last.pt`` (training state and settings) and its SHA-256 in ``last.pt.sha256``.

    The new digest joins the accepted ones before the checkpoint is renamed into place and the old ones
    are dropped after it, so a crash at any point leaves a checkpoint that its checksum file accepts.
    """
    payload = {
        "adapter": run.adapter.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "state": checkpoint_state(run.state),
        "config": run.config.to_json(),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = run.checkpoint
    write_checksums(path, [digest, *(read_checksums(path) or [])])
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    write_checksums(path, [digest])


def checkpoint_state(state: dict[str, Any]) -> dict[str, Any]:
    """The loop state as plain values for a checkpoint (the judgement as a dict)."""
    saved = {key: state[key] for key in STATE_KEYS}
    if saved["judgement"] is not None:
        saved["judgement"] = saved["judgement"].to_state()
    return saved


def loop_state(saved: dict[str, Any]) -> dict[str, Any]:
    """The loop state of a checkpoint (:func:`checkpoint_state`); keys it lacks take their defaults."""
    state = {key: saved[key] if key in saved else STATE_DEFAULTS[key] for key in STATE_KEYS}
    if state["judgement"] is not None:
        state["judgement"] = Judgement.from_state(state["judgement"])
    return state


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's payload, its bytes checked against ``last.pt.sha256`` and loaded with
    ``torch.load(..., weights_only=True)``.

    A checkpoint without a checksum file is accepted only from samplm 0.1.0 (no settings inside it), with a
    warning.

    Raises:
        CheckpointError: truncated, corrupted, not a checkpoint, or missing its checksum file.
    """
    data = path.read_bytes()
    recorded = read_checksums(path)
    if recorded is not None and hashlib.sha256(data).hexdigest() not in recorded:
        raise CheckpointError(
            path, f"its SHA-256 does not match {checksum_path(path).name} (truncated or corrupted)"
        )
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bytes that are not a checkpoint
        raise CheckpointError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict):
        raise CheckpointError(path, "not a samplm training checkpoint")
    if recorded is None:
        if "config" in payload:
            raise CheckpointError(path, f"no checksum file {checksum_path(path).name} beside it")
        warnings.warn(
            f"{path}: no checksum (a checkpoint of samplm 0.1.0); resuming without verifying it",
            UserWarning,
            stacklevel=5,  # the caller of train(): train -> resume_run -> load_checkpoint -> here
        )
    return payload


def load_checkpoint(run: TrainingRun) -> None:
    """Restore adapter, optimiser, scheduler and loop state (step, best metric) from ``run.checkpoint``.

    Raises:
        CheckpointError: see :func:`read_checkpoint`; also a checkpoint that does not fit this run.
        ResumeMismatchError: the run's optimisation settings differ from the checkpoint's.
    """
    path = run.checkpoint
    payload = read_checkpoint(path)
    stored = payload.get("config")
    check_resumable(run.config, json.loads(stored) if stored else _read_json(run.out / CONFIG_NAME), run.out)
    try:
        # a checkpoint from before the score readout or the mask bias (adapter formats 4, 5) gets a fresh
        # adapter's zeros
        run.adapter.load_state_dict(
            with_older_format_defaults(payload["adapter"], run.adapter.state_dict(), version=3)
        )
        run.optimizer.load_state_dict(payload["optimizer"])
        run.scheduler.load_state_dict(payload["scheduler"])
        run.state = loop_state(payload["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"does not hold this run's training state ({exc})") from exc


def check_resumable(config: TrainConfig, stored: dict[str, Any] | None, out: Path) -> None:
    """Refuse to resume ``out``'s run with ``config`` when a setting outside :data:`RESUMABLE_CHANGES`
    differs from ``stored`` (the settings the checkpoint was made with; a setting it lacks counts as its
    default; ``None``: unknown).

    Raises:
        ResumeMismatchError: listing each changed setting, old and new value.
    """
    if stored is None:
        return
    defaults = TrainConfig().to_dict()
    changes = {
        name: (stored.get(name, defaults[name]), value)
        for name, value in config.to_dict().items()
        if name not in RESUMABLE_CHANGES and stored.get(name, defaults[name]) != value
    }
    if changes:
        raise ResumeMismatchError(out, changes)


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or ``None`` when it is missing or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None
