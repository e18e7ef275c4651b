"""Atomic file writes, checksums and directory locks."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import RunLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write`` fills a temporary file beside it, which is then renamed.

    A crash or exception leaves any previous ``path`` untouched and no partial file behind. The file
    gets the permissions an ordinary write would give it (those of the file it replaces, else
    ``0o666`` minus the umask), not the private mode of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def _mode_for(path: Path) -> int:
    """Permission bits for a new version of ``path``."""
    with contextlib.suppress(FileNotFoundError):
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` for a UTF-8 text file."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def file_digest(path: str | os.PathLike[str], digest: Any = None, chunk_size: int = 1 << 20) -> Any:
    """``digest`` (a ``hashlib`` object; default: a new SHA-256) fed the bytes of the file at ``path``."""
    digest = hashlib.sha256() if digest is None else digest
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    return file_digest(path, chunk_size=chunk_size).hexdigest()


def checksum_path(path: str | os.PathLike[str]) -> Path:
    """The ``<name>.sha256`` file beside ``path`` that records its SHA-256."""
    path = Path(path)
    return path.with_name(f"{path.name}.sha256")


def write_checksums(path: str | os.PathLike[str], digests: Sequence[str]) -> Path:
    """Record ``digests`` (hex SHA-256) as the accepted contents of ``path``, atomically, in
    :func:`checksum_path` (``sha256sum`` format: ``sha256sum -c`` checks the first)."""
    name = Path(path).name
    return atomic_write_text(checksum_path(path), "".join(f"{digest}  {name}\n" for digest in digests))


def read_checksums(path: str | os.PathLike[str]) -> list[str] | None:
    """The digests recorded for ``path`` by :func:`write_checksums` (``None`` without a checksum file;
    an unreadable file gives ``[]``, which no content matches)."""
    try:
        text = checksum_path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    digests = [line.split()[0].lower() for line in text.splitlines() if line.strip()]
    return [d for d in digests if len(d) == 64 and all(c in "0123456789abcdef" for c in d)]


LOCK_NAME = ".lock"


@contextlib.contextmanager
def lock_directory(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive lock on ``directory`` (``directory/.lock``, ``fcntl.flock``, non-blocking).

    The holder's process id is written into the lock file. The lock is released when the block exits,
    exceptions included, and by the system when the process dies; the file itself stays. Where
    ``fcntl`` does not exist (Windows) no lock is taken.

    Raises:
        RunLockedError: another process (or another open of the lock file) holds it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    if fcntl is None:  # pragma: no cover - Windows
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(directory, _lock_holder(fd)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _lock_holder(fd: int) -> int | None:
    """The process id written in a lock file, if readable."""
    text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    return int(text) if text.isdigit() else None
