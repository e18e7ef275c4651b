"""The processes a sharded job runs on: one, or several started by ``torchrun`` / ``accelerate launch``.

``samplm embed``, ``segment`` and ``eval`` split their work into deterministic shards, one per process
(*rank*), and meet only to exchange small Python objects through ``torch.distributed`` (``gloo`` on CPUs,
``nccl`` on GPUs): the process group the launcher describes in ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``. Without those variables (``WORLD_SIZE`` unset or 1) every method is
a pass-through and ``torch.distributed`` is never initialised.

A rank that raises does not leave the others waiting: :meth:`Ranks.together` runs a piece of work on
every rank and then gathers each rank's outcome, so every rank learns of the failure and stops with the
same one-line error.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..errors import SamplmError
from .checks import first_line

T = TypeVar("T")

#: How long a rank waits for the others at a meeting point before giving up, in seconds (torch's own
#: default): the ranks meet after their shards, so a shard may run this much longer than the others.
TIMEOUT_S = 1800


class RankFailedError(SamplmError):
    """Another rank of a sharded job failed; this one stops too (the message names the rank)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in a sharded job.

    Attributes:
        rank: this process's index, 0 to ``world - 1`` (0 is the main process, which writes merged files).
        world: the number of processes.
        local_rank: this process's index on its machine (which GPU it takes).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is the process that writes the merged outputs."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        """Whether several processes share the work."""
        return self.world > 1

    def owns(self, index: int) -> bool:
        """Whether item ``index`` (0-based, in the job's fixed order) is this rank's: items are dealt
        round-robin (``index % world == rank``), so shards differ by at most one item and stay the same
        when the job is restarted with the same number of processes."""
        return index % self.world == self.rank

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's items of ``items`` (see :meth:`owns`), in order."""
        return [item for index, item in enumerate(items) if self.owns(index)]

    def device(self, device: str) -> str:
        """``device`` for this rank: a bare ``cuda`` becomes ``cuda:<local rank>`` when sharded."""
        return f"cuda:{self.local_rank}" if self.sharded and device == "cuda" else device

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.sharded:
            return [value]
        values: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(values, value)
        return values

    def broadcast(self, value: T) -> T:
        """The main process's ``value`` (picklable), on every rank."""
        if not self.sharded:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.sharded:
            torch.distributed.barrier()

    def together(self, work: Callable[[], T]) -> T:
        """``work()`` on this rank, then a meeting of every rank: its result if no rank raised. ``work``
        itself must not meet the other ranks (a rank that raised would not come).

        Raises:
            Exception: what ``work`` raised on this rank, unchanged.
            RankFailedError: ``work`` raised on another rank (names it and its error's first line).
        """
        try:
            value, problem = work(), None
        except Exception as exc:
            if not self.sharded:
                raise
            # tell the others; a lost peer or a timeout at the meeting must not hide this rank's own error
            with contextlib.suppress(Exception):
                self.gather(f"{type(exc).__name__}: {first_line(exc)}")
            raise
        problems = self.gather(problem)
        failed = [(rank, text) for rank, text in enumerate(problems) if text is not None]
        if failed:
            rank, text = failed[0]
            raise RankFailedError(f"rank {rank} of {self.world} failed ({text}); every rank stopped")
        return value

    def agree(self, items: Sequence[Any], what: str) -> None:
        """Check that every rank holds the same ``items`` in the same order (compared by count and a
        digest of their ``repr``) before the ranks deal them out; a meeting of every rank.

        Args:
            items: what is about to be sharded, e.g. image paths.
            what: their name in the error, plural (``"images"``).

        Raises:
            RankFailedError: on every rank, naming the first rank whose ``items`` differ from rank 0's.
        """
        if not self.sharded:
            return
        seen = self.gather((len(items), hashlib.sha256(repr(list(items)).encode()).hexdigest()))
        rank = next((r for r, mine in enumerate(seen) if mine[1] != seen[0][1]), None)
        if rank is None:
            return
        (count, _), (first, _) = seen[rank], seen[0]
        found = f"has {count} {what} and rank 0 has {first}"
        if count == first:
            found = f"has other {what} than rank 0"
        raise RankFailedError(
            f"rank {rank} of {self.world} {found}: every rank must see the same files in the same order "
            "(one shared folder, or identical copies at the same path)"
        )


def current_ranks(device: str = "cpu") -> Ranks:
    """This process's :class:`Ranks`, joining the launcher's process group when ``WORLD_SIZE`` > 1.

    The group is initialised once (``gloo`` for ``device`` on the CPU, ``nccl`` for CUDA), unless it
    already is (``accelerate`` may have done it); it stays up until :func:`leave_process_group`.

    Raises:
        RuntimeError: ``WORLD_SIZE`` > 1 but ``torch.distributed`` is not available in this torch build.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not torch.distributed.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch has no torch.distributed; run one process")
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    if torch.distributed.get_backend() == "nccl":  # NCCL's object collectives use the current GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Ranks(
        rank=torch.distributed.get_rank(),
        world=torch.distributed.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def leave_process_group() -> None:
    """Destroy this process's ``torch.distributed`` process group, if one is up (a no-op otherwise).

    Call it once a sharded job is over, before the process exits: a ``gloo`` group left to the
    interpreter's shutdown can abort the process (``terminate called without an active exception``)
    after its work is done, and the launcher then reports the whole job as failed.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
