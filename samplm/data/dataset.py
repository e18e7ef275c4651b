"""``InstanceDataset``: a list of :class:`Instance` with selection, seeded splits and skip accounting."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, SkippedDataWarning
from ..utils.checks import printable
from ..utils.files import sha256_file
from .instance import Instance


def data_error(where: object, problem: str) -> DataError:
    """A :class:`DataError` whose text is one printable line (see :func:`printable`)."""
    return DataError(printable(where), printable(problem))


class Skip(Exception):
    """Raised inside a reader for one annotation to skip; :meth:`SkipLog.record` counts it.

    Args:
        reason: what is wrong, a fixed phrase (annotations are counted by it).
        fix: what to do about it.
        where: the file and annotation, when not the one the reader is at.
    """

    def __init__(self, reason: str, fix: str = "", where: str = "") -> None:
        super().__init__(reason)
        self.reason, self.fix, self.where = reason, fix, where


class SkipLog:
    """Collects skipped annotations by reason; in strict mode the first problem raises instead."""

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def skip(self, reason: str, where: str | Path, fix: str = "") -> None:
        """Count one skipped annotation (or raise :class:`DataError` in strict mode).

        Args:
            reason: what is wrong, a fixed phrase (annotations are counted by it).
            where: the file, and the annotation or image in it.
            fix: what to do about it (shown with the example, and in the strict error).
        """
        where = printable(where)
        if self.strict:
            raise data_error(where, f"{reason}; {fix}" if fix else reason)
        self.counts[reason] += 1
        self.examples.setdefault(reason, f"{where}; {fix}" if fix else where)

    def record(self, skip: Skip, where: str | Path) -> None:
        """Count a :class:`Skip` raised for the annotation at ``where`` (unless it names its own place)."""
        self.skip(skip.reason, skip.where or where, skip.fix)


@dataclass
class InstanceDataset:
    """Annotated instances read from one source.

    Attributes:
        instances: the records, in a deterministic order; their ``instance_id``s are unique (a repeated
            one is a :class:`DataError`).
        skipped: number of annotations skipped, by reason.
        skipped_examples: one offending file per reason.
        source: where they were read from (for messages).
    """

    instances: list[Instance]
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_examples: dict[str, str] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        """Every instance id must be unique: reports and evaluation files are named by them."""
        counts = Counter(inst.instance_id for inst in self.instances)
        repeated = [(name, n) for name, n in counts.items() if n > 1]
        if repeated:
            name, n = repeated[0]
            files = sorted({printable(i.image_path.name) for i in self.instances if i.instance_id == name})
            raise DataError(
                self.source or "dataset",
                f"instance id {name!r} is used by {n} instances (images {', '.join(files)}); "
                "every instance needs its own id",
            )

    @classmethod
    def from_log(cls, instances: list[Instance], log: SkipLog, source: str) -> InstanceDataset:
        dataset = cls(list(instances), Counter(log.counts), dict(log.examples), source)
        dataset.warn_skipped()
        return dataset

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self) -> Iterator[Instance]:
        return iter(self.instances)

    def __getitem__(self, index: int) -> Instance:
        return self.instances[index]

    @property
    def categories(self) -> list[str]:
        return sorted({inst.category for inst in self.instances})

    def image_paths(self) -> list[Path]:
        """Distinct images, sorted."""
        return sorted({inst.image_path for inst in self.instances})

    def expected_sizes(self) -> dict[str, tuple[int, int]]:
        """``{image path: (H, W)}`` declared by the annotations (decides EXIF handling and cache keys)."""
        return {str(i.image_path): i.image_size for i in self.instances if i.image_size is not None}

    def by_image(self) -> dict[Path, list[Instance]]:
        """Instances grouped by image, images sorted."""
        groups: dict[Path, list[Instance]] = {}
        for inst in sorted(self.instances, key=lambda i: (str(i.image_path), i.instance_id)):
            groups.setdefault(inst.image_path, []).append(inst)
        return groups

    def select(self, categories: Sequence[str] | None) -> InstanceDataset:
        """Keep the given categories; an unknown name is an error that lists the available ones."""
        if not categories:
            return self
        available = set(self.categories)
        unknown = sorted(set(categories) - available)
        if unknown:
            raise DataError(
                self.source,
                f"unknown categories {unknown}; available: {sorted(available)}",
            )
        wanted = set(categories)
        return InstanceDataset(
            [i for i in self.instances if i.category in wanted],
            self.skipped,
            self.skipped_examples,
            self.source,
        )

    def split(
        self, val_fraction: float = 0.2, seed: int = 0, *, by_content: bool = True
    ) -> tuple[InstanceDataset, InstanceDataset]:
        """Deterministic split **by image** (all instances of an image land on the same side).

        With ``by_content`` (default), image files with identical bytes form one group, so a duplicate
        file never lands on both sides (public sets often hold copies under several names). Groups are
        ordered by their first path, shuffled with ``numpy.random.default_rng(seed)``, and the first
        ``round(val_fraction * n_groups)`` go to validation (at least one when ``val_fraction > 0``).
        Without duplicates the result is the same either way.
        """
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        groups = _content_groups(self.image_paths()) if by_content else [[p] for p in self.image_paths()]
        order = np.random.default_rng(seed).permutation(len(groups))
        n_val = round(val_fraction * len(groups))
        if val_fraction > 0 and len(groups) > 1:
            n_val = min(max(n_val, 1), len(groups) - 1)
        val_images = {path for i in order[:n_val] for path in groups[i]}
        train = [i for i in self.instances if i.image_path not in val_images]
        val = [i for i in self.instances if i.image_path in val_images]
        return (
            InstanceDataset(train, self.skipped, self.skipped_examples, self.source),
            InstanceDataset(val, Counter(), {}, self.source),
        )

    def warn_skipped(self) -> None:
        """Issue one :class:`SkippedDataWarning` summarising what was skipped (if anything)."""
        if not self.skipped:
            return
        total = sum(self.skipped.values())
        reasons = "; ".join(
            f"{count} {reason} (e.g. {self.skipped_examples.get(reason, '?')})"
            for reason, count in self.skipped.most_common()
        )
        warnings.warn(
            f"{self.source}: skipped {total} annotation(s): {reasons}", SkippedDataWarning, stacklevel=3
        )


def _content_groups(paths: list[Path]) -> list[list[Path]]:
    """``paths`` (sorted) grouped by the SHA-256 of their bytes, groups ordered by first path."""
    groups: dict[str, list[Path]] = {}
    for path in paths:
        groups.setdefault(sha256_file(path), []).append(path)
    return list(groups.values())
