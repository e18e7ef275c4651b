"""A run's ``metrics.jsonl``: one JSON line per logged step, validation and judgement.

:func:`metrics_log` opens the file for appending (and, for the training loop, a TensorBoard writer under
``tensorboard/`` when TensorBoard is installed); :func:`trim_metrics` cuts the file back to the step a
run starts from, so a resumed run logs no step twice.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..utils.files import atomic_write_text

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Writes records to an open ``metrics.jsonl`` and, when given, a TensorBoard writer."""

    def __init__(self, file: TextIO, board: Any = None) -> None:
        self.file = file
        self.board = board

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (it has a ``step``) as one line, flushed; every other key also becomes a
        TensorBoard scalar at that step."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.board is not None:
            for key, value in record.items():
                if key != "step":
                    self.board.add_scalar(key, value, record["step"])


@contextlib.contextmanager
def metrics_log(out: Path, *, tensorboard: bool = False) -> Iterator[MetricsLog]:
    """``out/metrics.jsonl`` opened for appending, with a TensorBoard writer if ``tensorboard`` and
    TensorBoard is installed; both are closed on leaving."""
    with (out / METRICS_NAME).open("a", encoding="utf-8") as file:
        board = _tensorboard(out) if tensorboard else None
        try:
            yield MetricsLog(file, board)
        finally:
            if board is not None:
                board.close()


def _tensorboard(out: Path):
    """A TensorBoard writer under ``out/tensorboard`` if TensorBoard is installed, else ``None``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))


def trim_metrics(path: Path, step: int) -> None:
    """Keep the ``metrics.jsonl`` lines of steps up to ``step``, where the run starts: a resumed run drops
    the lines of the steps it redoes (and a line cut short by a crash), a run from step 0 starts afresh
    (its candidates are judged again at step 0)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines() if step > 0 else []
    kept = [line for line in lines if _line_step(line) <= step]
    atomic_write_text(path, "".join(f"{line}\n" for line in kept))


def _line_step(line: str) -> float:
    """The ``step`` of a ``metrics.jsonl`` line (infinite for a line that is not a record)."""
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return math.inf
