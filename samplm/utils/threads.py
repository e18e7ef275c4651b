"""How many CPU threads torch uses in each stage of a job.

The image encoder is one large network per image: its matrix products speed up with every core. Everything
after it (a training step of the prompt adapter, SAM-F's blend fitting, an evaluation click) runs SAM's
small mask decoder or smaller tensors, where torch's threads cost more in start-up and synchronisation
than they save, and cost far more when other jobs share the cores (``benchmarks/threads.py``,
docs/benchmarks.md). So each stage sets its own count, passed as data (the ``threads`` setting):

* **encoder stage** (:meth:`~samplm.cache.embeddings.EmbeddingCache.build`): :func:`encoder_threads`,
  every thread torch has;
* **decoder-side stages** (the training loop, SAM-F, evaluation clicks): :func:`decoder_threads`,
  at most :data:`DECODER_THREADS`.

Precedence, highest first:

1. ``threads=N`` (``--threads N``): at most ``N`` threads in every stage (the encoder uses ``N``, the
   decoder-side stages ``min(N, DECODER_THREADS)``);
2. what the user set for the process, ``OMP_NUM_THREADS=N`` or ``torch.set_num_threads(N)``: the stages
   never use more threads than ``torch.get_num_threads()`` says when they start;
3. ``threads=None`` / ``"auto"``: the per-stage choice above.

A stage restores the count it found when it ends (:func:`torch_threads`). Thread counts change speed,
not results.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO

import torch

from ..errors import ConfigError

#: Threads of the decoder-side stages (training steps, SAM-F, evaluation clicks): one was fastest in each
#: of them, idle and with a competing job (``benchmarks/threads.py``, docs/benchmarks.md).
DECODER_THREADS = 1

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


def encoder_threads(threads: int | str | None = None) -> int:
    """Threads for the image encoder: ``threads`` if given, else what torch has now (all cores unless the
    user set fewer)."""
    limit = thread_limit(threads)
    return limit if limit is not None else torch.get_num_threads()


def decoder_threads(threads: int | str | None = None) -> int:
    """Threads for decoder-side work: at most :data:`DECODER_THREADS`, ``threads`` and what torch has now
    (``threads`` given: at most it)."""
    limit = thread_limit(threads)
    return min(DECODER_THREADS, limit if limit is not None else torch.get_num_threads())


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
    """Print (to ``stream``, default stderr) and return one line when the machine is oversubscribed: its
    1-minute load average exceeds its CPU count; ``None`` (nothing printed) otherwise or where the load
    average is unknown."""
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return None
    if load <= cpus:
        return None
    line = (
        f"samplm: this machine is busy (load {load:.1f} on {cpus} CPUs): other jobs slow this one down; "
        "--threads 1 helps when several run at once"
    )
    print(line, file=stream if stream is not None else sys.stderr, flush=True)
    return line
