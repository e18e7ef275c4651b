"""Reading the next images of a folder while the current one is segmented.

:func:`read_ahead` runs a reader (hash the file, see whether an earlier run finished it, decode its
pixels) on a background thread a few images ahead of the consumer, so the decoder never waits for
the disk or the JPEG decoder. Reading releases the GIL for most of its time (file I/O, Pillow's
decoder, hashing), so it overlaps with torch's work on the main thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import DataError

T = TypeVar("T")

#: Images read ahead of the one being segmented.
READ_AHEAD = 2


@dataclass(frozen=True)
class ReadImage:
    """One image as the reader left it.

    Attributes:
        path: the file.
        digest: hex SHA-256 of its bytes, or ``None`` if it could not be read.
        pixels: ``H x W x 3`` RGB uint8, or ``None`` (resumed, or unreadable).
        resumed: the per-image entry an earlier run wrote for the same content and settings, or ``None``.
        error: why it cannot be segmented (unreadable, above the pixel limit), or ``None``.
    """

    path: Path
    digest: str | None = None
    pixels: np.ndarray | None = None
    resumed: dict[str, Any] | None = None
    error: DataError | None = None

    def require(self) -> np.ndarray:
        """The pixels.

        Raises:
            DataError: the reader's error.
        """
        if self.error is not None:
            raise self.error
        assert self.pixels is not None, "a resumed image has no pixels"
        return self.pixels


def read_ahead(
    items: Iterable[T], read: Callable[[T], ReadImage], depth: int = READ_AHEAD
) -> Iterator[ReadImage]:
    """``read(item)`` of each item, in order, computed on one background thread up to ``depth`` items
    ahead of the caller. A reader's exception is raised when its item is reached."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="samplm-read") as pool:
        pending: deque[Future[ReadImage]] = deque()
        for item in items:
            pending.append(pool.submit(read, item))
            if len(pending) > depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
