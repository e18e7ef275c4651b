"""How many CPU threads torch uses in each stage of a job.

Measured on 2 cores (``benchmarks/threads.py``, docs/benchmarks.md): on an idle machine every stage is
faster with all threads (image encoder 0.71x the time of one thread, a training step 0.88x, SAM-F 0.49x,
an evaluation click 0.65x); with one other CPU-bound job on the cores, every stage is 2x to 5.5x
*slower* with all threads than with one (the threads wait for each other while the other job holds a
core). So each stage decides when it starts (:func:`stage_threads`): all of torch's threads, or one
when the machine is oversubscribed (:func:`machine_busy`: a 1-minute load average of at least the CPU
count + 1, since it counts this job's own threads).
The stages that decide: encoding images (:meth:`~samplm.cache.embeddings.EmbeddingCache.build`), each
training step and validation (:func:`~samplm.train.trainer.train`), SAM-F fitting
(:func:`~samplm.eval.samf.train_samf`) and each evaluation click
(:class:`~samplm.eval.protocol.InstancePredictor`). The choice is passed as data: their ``threads``
setting.

Precedence, highest first:

1. ``threads=N`` (``--threads N``): at most ``N`` threads in every stage (``N``, or one when busy);
2. what the user set for the process, ``OMP_NUM_THREADS=N`` or ``torch.set_num_threads(N)``: no stage
   uses more threads than ``torch.get_num_threads()`` says when it starts;
3. ``threads=None`` / ``"auto"``: all threads, one when busy.

A stage restores the count it found when it ends (:func:`torch_threads`). Thread counts change speed,
not the figures (sums may round differently in the last bit: ``samplm_lite``'s embeddings by at most one
float16 step, with the same IoU on every instance).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO

import torch

from ..errors import ConfigError

#: The value of ``threads`` that means the per-stage choice.
AUTO = "auto"


def thread_limit(value: int | str | None, label: str = "--threads") -> int | None:
    """``threads`` as a number: ``None`` for ``"auto"`` / ``None``, else a positive integer.

    Raises:
        ConfigError: anything else (names ``label``).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == AUTO):
        return None
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 1 or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(label, f"must be {AUTO} or a positive integer, got {value!r}")
    return number


def machine_busy() -> bool:
    """True when the machine is oversubscribed: its 1-minute load average is at least one more than its
    CPU count. The load counts this job's own threads, so a job alone on the machine (load about the
    CPU count while it runs) is not busy; one more runnable job is. False where the load is unknown."""
    load = _load()
    return load is not None and load >= (os.cpu_count() or 1) + 1


def stage_threads(threads: int | str | None = None) -> int:
    """Threads for a stage starting now: ``threads`` (``None`` / ``"auto"``: what torch has, all cores
    unless the user set fewer), or one when :func:`machine_busy`."""
    limit = thread_limit(threads)
    return 1 if machine_busy() else (limit if limit is not None else torch.get_num_threads())


def _load() -> float | None:
    """The 1-minute load average, or ``None`` where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)`` and restore the previous count after it
    (also on an error); ``None`` leaves the count as it is."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    if count != before:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def busy_hint(stream: TextIO | None = None) -> str | None:
    """Print (to ``stream``, default stderr) and return one line when the machine is oversubscribed (as
    :func:`machine_busy`); ``None`` (nothing printed) otherwise."""
    if not machine_busy():
        return None
    cpus, load = os.cpu_count() or 1, _load()
    line = (
        f"samplm: this machine is busy (load {load:.1f} on {cpus} CPUs): other jobs slow this one down; "
        "--threads 1 helps when several run at once"
    )
    print(line, file=stream if stream is not None else sys.stderr, flush=True)
    return line
