"""``DataSettings``: which dataset a job reads (``samplm embed``, ``train`` and ``eval``'s data options)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..utils.checks import Limit
from ..utils.settings import about
from . import FORMATS, InstanceDataset, read_dataset

#: Range of a held-out share of images (``--val-fraction`` of ``samplm train`` and ``eval``).
VAL_FRACTION_LIMIT = Limit(float, 0, 1, high_open=True)


@dataclass(frozen=True)
class DataSettings:
    """The annotations to read, their format, images folder and categories (see :func:`read_dataset`)."""

    data: str | None = field(
        default=None,
        metadata=about("annotations: COCO JSON, VOC XML folder, mask folder, or CelebAMask-HQ root"),
    )
    format: str | None = field(default=None, metadata=about("annotation format", choices=list(FORMATS)))
    images: str | None = field(
        default=None, metadata=about("images folder (default: next to the annotations; required for masks)")
    )
    category: list[str] | None = field(
        default=None, metadata=about("category / part name(s) to learn (default: all)")
    )
    strict_data: bool = field(default=False, metadata=about("fail on the first bad annotation"))

    def read(self, data: str | os.PathLike[str] | None = None) -> InstanceDataset:
        """The dataset at ``data`` (default: :attr:`data`) in :attr:`format`, limited to :attr:`category`."""
        categories = [self.category] if isinstance(self.category, str) else self.category
        return read_dataset(
            self.format,
            self.data if data is None else data,
            images=self.images,
            categories=categories,
            strict=self.strict_data,
        )
