"""Progress bars that do not flood logs.

On a terminal, :func:`progress_bar` is tqdm's bar (``tqdm.auto``: a widget in notebooks). When stderr is
not a terminal (a log file, CI, ``nohup``, a job scheduler), a bar redrawn with ``\\r`` many times a
second fills the log with one enormous line; there it prints one ordinary line every
:data:`LOG_EVERY_PERCENT` percent instead (every :data:`LOG_EVERY_SECONDS` seconds when the total is
unknown), plus the final state::

    embedding images:  25% 50/200 [00:31<01:33, 1.60img/s]

Example::

    for image in progress_bar(images, desc="embedding images", unit="img", disable=not verbose):
        ...
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm as std_tqdm
from tqdm.auto import tqdm as auto_tqdm
from tqdm.autonotebook import tqdm as notebook_tqdm

from .checks import printable

#: In logs (stderr not a terminal): a line every this many percent of the total ...
LOG_EVERY_PERCENT = 5
#: ... or, when the total is unknown, at most one line every this many seconds.
LOG_EVERY_SECONDS = 30.0
_LOG_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class LogLines(std_tqdm):
    """A tqdm that writes whole lines (``\n``, never ``\r``): the first state, then one line whenever
    ``miniters`` steps and ``mininterval`` seconds have passed since the last (also for refreshes such
    as ``set_postfix``), and the final state. It starts no monitor thread, and the step count between
    lines is kept apart from ``miniters``: a monitor that another tqdm started lowers ``miniters`` of
    every bar that has not printed for ``maxinterval`` seconds to 1, which would print every step."""

    monitor_interval = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._every = max(1, int(kwargs.get("miniters") or 1))
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Write the current state as one line if it is due (see the class); never clear a line."""
        written_n, written_t = getattr(self, "_written", (None, 0.0))
        now = time.monotonic()
        if msg == "" or (written_n is not None and not self._due(written_n, now - written_t)):
            return False
        self._written = (self.n, now)
        self.fp.write((msg if msg is not None else str(self)).strip() + "\n")
        self.fp.flush()
        return True

    def _due(self, written_n: float, elapsed: float) -> bool:
        if getattr(self, "_closing", False):
            return self.n != written_n
        return self.n - written_n >= self._every and elapsed >= self.mininterval

    def close(self) -> None:
        """Write the final state (if not written yet) and close without tqdm's trailing newline."""
        if not self.disable:
            self._closing = True
            self.display()
            self.leave = False
        super().close()


def is_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``) is an interactive terminal."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None, *, total: float | None = None, **kwargs: Any
) -> std_tqdm:
    """tqdm's bar on a terminal (or in a notebook); in logs, one line per :data:`LOG_EVERY_PERCENT`
    percent.

    Args:
        iterable: what to iterate over (or ``None`` and call ``update``).
        total: number of steps (default ``len(iterable)`` when it has one).
        **kwargs: tqdm's arguments (``desc``, ``unit``, ``disable``, ``file``, ...); ``desc`` is shown
            through :func:`~samplm.utils.checks.printable` (it may name a file).
    """
    if kwargs.get("desc") is not None:
        kwargs["desc"] = printable(kwargs["desc"])
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    stream = kwargs.get("file")
    if is_terminal(stream) or notebook_tqdm is not std_tqdm or kwargs.get("disable"):
        return auto_tqdm(iterable, total=total, **kwargs)
    if total:
        kwargs.update(miniters=max(1, math.ceil(total * LOG_EVERY_PERCENT / 100)), mininterval=0)
    else:
        kwargs.update(miniters=1, mininterval=LOG_EVERY_SECONDS)
    kwargs.setdefault("bar_format", _LOG_FORMAT if total else None)
    return LogLines(iterable, total=total, **kwargs)
