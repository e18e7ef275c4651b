"""Exceptions and warnings raised by samplm.

Every error that samplm raises on purpose derives from :class:`SamplmError`, so callers can catch
one type. The subclasses also derive from the matching built-in (``ValueError``, ``FileNotFoundError``,
``RuntimeError``, ``KeyError``) so code written against ``SamPredictor`` keeps working. File names and
other text read from files are shown through :func:`printable`, so a message stays one line and cannot
carry terminal escape sequences.
"""

from __future__ import annotations

import os


def printable(text: object) -> str:
    """``str(text)`` on one line, safe for a terminal: control characters (newlines, ESC), other
    non-printable characters and characters that cannot be written as UTF-8 (undecodable file names)
    are backslash-escaped as ``repr`` escapes them (``\\n``, ``\\x1b``, ``\\udcff``); printable text,
    non-ASCII letters included, is kept as it is."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class SamplmError(Exception):
    """Base class of every error samplm raises on purpose."""


class AdapterFormatError(SamplmError, ValueError):
    """An adapter file exists but is not a valid samplm adapter.

    Args:
        path: the offending file (or directory).
        problem: what is wrong with it, in one sentence.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{printable(self.path)}: {printable(problem)}")


class AdapterNotFoundError(SamplmError, FileNotFoundError):
    """No adapter could be resolved from a name; ``tried`` lists every place that was looked at, ``hint``
    (possibly empty) what to do about it (e.g. when the Hub could not be reached)."""

    def __init__(self, name: str, tried: list[str], hint: str = "") -> None:
        self.name = name
        self.tried = list(tried)
        self.hint = hint
        lines = "\n".join(f"  - {entry}" for entry in self.tried)
        super().__init__(f"Could not find adapter {name!r}. Tried:\n{lines}" + (f"\n{hint}" if hint else ""))

    def __str__(self) -> str:  # FileNotFoundError would otherwise format errno/strerror
        return self.args[0]


class AdapterCompatibilityError(SamplmError, ValueError):
    """An adapter does not fit the SAM it is attached to (width, or fingerprint with strict=True)."""


class PromptError(SamplmError, ValueError):
    """A prompt given to the predictor has the wrong shape, type or values."""


class ImageNotSetError(SamplmError, RuntimeError):
    """``predict`` was called before ``set_image``."""


class UnknownAdapterError(SamplmError, KeyError):
    """An adapter name that is not loaded in the predictor was used."""

    def __init__(self, name: str, loaded: list[str]) -> None:
        self.name = name
        self.loaded = list(loaded)
        known = ", ".join(repr(n) for n in self.loaded) or "none"
        super().__init__(f"No adapter named {name!r} is loaded (loaded: {known}).")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class DataError(SamplmError, ValueError):
    """A dataset file is missing or unreadable, or an annotation is invalid.

    Args:
        path: the offending file.
        problem: what is wrong, in one sentence.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{printable(self.path)}: {printable(problem)}")


class MissingEmbeddingError(DataError, KeyError):
    """An image has no embedding in the cache: it was never encoded by this model (run ``samplm embed``).

    Also a ``KeyError``, which :meth:`samplm.cache.embeddings.EmbeddingCache.get` raised before.

    Args:
        path: the image.
        cache_dir: the cache directory (one image encoder's) that lacks it.
    """

    def __init__(self, path: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = os.fspath(cache_dir)
        super().__init__(
            path,
            f"no cached embedding in {printable(self.cache_dir)}; run `samplm embed` on this dataset with "
            "the same model and --cache first",
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class SkippedDataWarning(UserWarning):
    """Some annotations were skipped while reading a dataset (the message counts them by reason)."""


class FingerprintMismatchWarning(UserWarning):
    """The adapter was trained against a SAM whose prompt encoder / mask decoder differ from this one."""


class CheckpointError(SamplmError, RuntimeError):
    """A training checkpoint cannot be resumed from: truncated, corrupted (checksum mismatch), not a
    checkpoint, or missing its checksum file.

    Args:
        path: the checkpoint file.
        problem: what is wrong with it, in one sentence.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(
            f"{printable(self.path)}: {printable(problem)}; cannot resume from it. Start the run over with "
            "--no-resume (train(..., resume=False)) or delete the file"
        )


class ResumeMismatchError(SamplmError, ValueError):
    """A run would resume with optimisation settings that differ from those its checkpoint was made with.

    Args:
        out: the run's output directory.
        changes: ``{setting: (stored, new)}``.
    """

    def __init__(self, out: str | os.PathLike[str], changes: dict[str, tuple[object, object]]) -> None:
        self.out = os.fspath(out)
        self.changes = dict(changes)
        listed = ", ".join(f"{name}: {old!r} -> {new!r}" for name, (old, new) in self.changes.items())
        super().__init__(
            f"{printable(self.out)}: cannot resume with changed training settings ({listed}); re-run "
            "with the previous settings, or start over with --no-resume (train(..., resume=False)), or use "
            "a new --out"
        )


class RunLockedError(SamplmError, RuntimeError):
    """Another process holds the lock of a training output directory.

    Args:
        directory: the locked directory.
        pid: the process id recorded by the holder (``None`` if unknown).
    """

    def __init__(self, directory: str | os.PathLike[str], pid: int | None) -> None:
        self.directory = os.fspath(directory)
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"{printable(self.directory)} is in use by another samplm run ({holder}); wait for it to "
            "finish or use another --out"
        )


class NonFiniteError(SamplmError, FloatingPointError):
    """Training produced a NaN or infinite loss, or an adapter with NaN or infinite weights."""


class ConfigError(SamplmError, ValueError):
    """A setting (adapter hyper-parameter, training setting, command-line option) has the wrong type or
    lies out of range.

    Args:
        field: the setting, as the user wrote it (``plm.num_heads``, ``--lr``, ``lr in run.yaml``).
        problem: what is wrong and what is expected, e.g. ``must be an integer >= 1, got 0``.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")


class ImageError(SamplmError, ValueError):
    """An image given to ``set_image`` has a layout or dtype that cannot be converted unambiguously."""


class AdapterNameError(SamplmError, ValueError):
    """An adapter name, Hub repo id or revision is malformed (too long, or a revision with ``..``,
    whitespace or misplaced ``/``); raised before anything is looked up."""


class AdapterOutputError(SamplmError, RuntimeError):
    """An adapter made the decoder output NaN or infinite logits (its weights overflow)."""


class HubUnreachableError(SamplmError, ConnectionError):
    """The Hub (``HF_ENDPOINT``) could not be reached or refused the upload."""


class PrototypeError(SamplmError, ValueError):
    """A target prototype (``prototype.safetensors``) is missing, unreadable, or made with another image
    encoder.

    Args:
        path: the prototype file (or what it was computed from).
        problem: what is wrong and what to do, in one sentence.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{printable(self.path)}: {printable(problem)}")
