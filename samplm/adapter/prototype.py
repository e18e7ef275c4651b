"""``TargetPrototype``: what the task's objects look like to SAM's image encoder, as one vector.

The prototype is the mean of the image-embedding cells under the target masks (each mask weighted
equally, each cell by the share of it the mask covers), scaled to unit length. Cells are first
*centred*: the mean cell of their own image (over the cells covering the image, not the padding) is
subtracted, so what every cell of an image shares (small encoders' embeddings are nearly parallel:
raw cosines of 0.98-0.99 everywhere on ``samplm_lite``) drops out and what sets the target apart from
its surroundings remains. Its cosine similarity
with every cell of a new image's embedding is a *location prior* (:mod:`samplm.prompts.location_prior`): where
the task's objects probably are, found without a click (the idea of PerSAM).

It depends on the image encoder only (not on the adapter), and is stored beside an adapter as
``prototype.safetensors``: tensor ``prototype`` (``C``, float32) and a JSON header (number of masks,
the image encoder's key, task). ``samplm train`` writes it from the training masks;
``samplm fit-prototype`` from reference images and masks (one-shot use, with or without an adapter).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..constants import PROTOTYPE_FORMAT, PROTOTYPE_HEADER_KEY, PROTOTYPE_NAME
from ..errors import ConfigError, PrototypeError
from ..utils.checks import Limit, first_line, shown
from ..utils.files import atomic_write
from ..version import __version__


@dataclass(frozen=True)
class TargetPrototype:
    """A unit-length mean embedding of the target.

    Attributes:
        vector: ``C`` float32 unit vector (SAM: ``C`` = 256).
        num_masks: how many masks it was averaged from.
        encoder: key of the image encoder whose embeddings it was computed from
            (:func:`samplm.cache.embeddings.sam_encoder_key`), or ``None`` if unknown.
        task: the task it describes (the adapter's task), if known.
        source: the file it was loaded from (named in errors), ``None`` if made in memory.
    """

    vector: Tensor
    num_masks: int
    encoder: str | None = None
    task: str | None = None
    source: str | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_cells(
        cls,
        pairs: Iterable[tuple[Tensor, np.ndarray, tuple[int, int]]],
        *,
        img_size: int,
        encoder: str | None = None,
        task: str | None = None,
    ) -> TargetPrototype:
        """Average centred embeddings under masks given as per-cell weights.

        Args:
            pairs: ``(embedding 1 x C x h x w, weights h x w, input_size (H', W'))`` per mask, weights in
                ``[0, 1]`` being the share of each embedding cell the mask covers
                (:func:`samplm.train.targets.to_padded_grid` with the grid side).
            img_size: the encoder's input side (SAM: 1024).
            encoder, task: recorded in the prototype.

        Raises:
            PrototypeError: no pair, or every mask covers nothing on the embedding grid.
        """
        means = []
        for embedding, weights, input_size in pairs:
            w = torch.as_tensor(weights, dtype=torch.float32)
            if float(w.sum()) <= 0:
                continue
            cells = centred_cells(embedding, input_size, img_size).flatten(1)  # C x hw
            means.append(cells @ w.flatten().to(cells.device) / w.sum())
        if not means:
            raise PrototypeError(
                "reference masks",
                "no mask covers any embedding cell: nothing to average (give non-empty masks, each covering "
                "at least part of one cell of the embedding grid)",
            )
        vector = torch.stack(means).mean(0).cpu()
        return cls(torch.nn.functional.normalize(vector, dim=0), len(means), encoder, task)

    # ------------------------------------------------------------------ use
    def similarity(self, embedding: Tensor, input_size: tuple[int, int], img_size: int) -> Tensor:
        """Cosine similarity of every centred embedding cell to the prototype.

        Args:
            embedding: ``1 x C x h x w`` (or ``C x h x w``) image embedding.
            input_size: ``(H', W')`` of the image after ``ResizeLongestSide``.
            img_size: the encoder's input side (SAM: 1024).

        Returns:
            ``h x w`` float32 map in ``[-1, 1]`` on the embedding's grid (covering the padded square).

        Raises:
            PrototypeError: ``C`` differs from the prototype's length.
        """
        cells = centred_cells(embedding, input_size, img_size)
        if cells.shape[0] != self.vector.numel():
            raise PrototypeError(
                self.source or "prototype",
                f"has {self.vector.numel()} channels but the image embedding has {cells.shape[0]}: "
                "it was made with another image encoder; fit it again with this base",
            )
        unit = torch.nn.functional.normalize(cells, dim=0)
        return torch.einsum("c,chw->hw", self.vector.to(unit.device), unit)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``prototype.safetensors`` atomically into a directory (an adapter's) or to a file path.

        Returns:
            The file written.
        """
        target = prototype_path(path)
        header = {
            PROTOTYPE_HEADER_KEY: json.dumps(
                {
                    "format": PROTOTYPE_FORMAT,
                    "features": "centred",
                    "num_masks": self.num_masks,
                    "encoder": self.encoder,
                    "task": self.task,
                    "samplm_version": __version__,
                }
            )
        }
        tensors = {"prototype": self.vector.detach().float().cpu().contiguous()}
        return atomic_write(target, lambda tmp: save_file(tensors, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TargetPrototype:
        """Read a prototype from its file, or from the adapter directory holding it.

        Raises:
            PrototypeError: the file is missing, unreadable, or not a samplm prototype: a header that is
                not JSON, nested too deeply, or whose fields have the wrong type; a tensor that is not a
                real, finite, non-zero vector whose length fits float32 (names the file).
        """
        file = prototype_path(path)
        if not file.is_file():
            raise PrototypeError(
                file, "no prototype here; write one with `samplm fit-prototype` or train with `samplm train`"
            )
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                text = (handle.metadata() or {})[PROTOTYPE_HEADER_KEY]
                vector = handle.get_tensor("prototype")
        except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise PrototypeError(file, f"is not a samplm prototype file ({first_line(exc)})") from exc
        num_masks, encoder, task = _header_fields(_parse_header(text, file), file)
        vector = _unit(_checked_vector(vector, file))
        return cls(vector, num_masks, encoder, task, source=os.fspath(file))

    def check_encoder(self, encoder: str, source: str | os.PathLike[str] | None = None) -> None:
        """Raise :class:`PrototypeError` naming ``source`` (default: the file it was loaded from) and both
        encoders if the prototype was made with another image encoder."""
        if self.encoder is not None and self.encoder != encoder:
            raise PrototypeError(
                source or self.source or "prototype",
                f"was computed with image encoder {self.encoder}, but this base's encoder is {encoder}; "
                "fit it again with this base (`samplm fit-prototype`)",
            )


def _parse_header(text: str, file: Path) -> Any:
    """The prototype header's JSON; :class:`PrototypeError` if it is not JSON or nested too deeply."""
    try:
        return json.loads(text)
    except ValueError as exc:  # (also numbers too long to convert)
        raise PrototypeError(file, f"header is not valid JSON ({first_line(exc)})") from exc
    except RecursionError as exc:
        raise PrototypeError(file, "header is nested too deeply to be a prototype header") from exc


def _header_fields(header: Any, file: Path) -> tuple[int, str | None, str | None]:
    """``(num_masks, encoder, task)`` of a parsed header, each checked for its type."""
    if not isinstance(header, dict) or header.get("format") != PROTOTYPE_FORMAT:
        raise PrototypeError(file, f"header format is not {PROTOTYPE_FORMAT!r}")
    try:
        stored = header.get("num_masks")
        num_masks = Limit(int, 0).check("num_masks", 0 if stored is None else stored)
    except ConfigError as exc:
        raise PrototypeError(file, f"header field {exc}") from exc
    for name in ("encoder", "task"):
        if not isinstance(header.get(name), str | None):
            problem = f"header field {name} must be a string or null, got {shown(header[name])}"
            raise PrototypeError(file, problem)
    return int(num_masks), header.get("encoder"), header.get("task")


def _checked_vector(vector: Tensor, file: Path) -> Tensor:
    """The ``C`` prototype tensor as float32; :class:`PrototypeError` unless it is a real, finite, non-zero
    vector whose length fits float32 (huge values would normalise to zeros)."""
    if vector.dim() != 1 or not vector.is_floating_point():
        found = f"{vector.dtype} of shape {tuple(vector.shape)}"
        raise PrototypeError(file, f"tensor 'prototype' must be a float vector, got {found}")
    vector = vector.float()
    norm = float(vector.norm()) if bool(torch.isfinite(vector).all()) else math.nan
    if not math.isfinite(norm) or norm == 0:
        raise PrototypeError(
            file,
            "tensor 'prototype' must be a non-zero, finite vector whose length fits float32 (no NaN, "
            "inf or values near 1e38); fit it again with `samplm fit-prototype`",
        )
    return vector


def valid_cells(grid: tuple[int, int], input_size: tuple[int, int], img_size: int) -> Tensor:
    """``h x w`` bool: the embedding cells whose centre lies on the image (not on the padding)."""
    h, w = grid
    cell = img_size / w
    rows = (torch.arange(h, dtype=torch.float32) + 0.5) * cell < input_size[0]
    cols = (torch.arange(w, dtype=torch.float32) + 0.5) * cell < input_size[1]
    return rows[:, None] & cols[None, :]


def centred_cells(embedding: Tensor, input_size: tuple[int, int], img_size: int) -> Tensor:
    """``C x h x w`` float32 embedding minus the mean of the cells covering the image."""
    cells = embedding.reshape(-1, *embedding.shape[-2:]).float()
    valid = valid_cells(tuple(cells.shape[-2:]), input_size, img_size).to(cells.device)
    if not bool(valid.any()):
        return cells
    return cells - cells[:, valid].mean(dim=1)[:, None, None]


def prototype_path(path: str | os.PathLike[str]) -> Path:
    """``path/prototype.safetensors`` for a directory (an adapter's), else ``path`` itself."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path / PROTOTYPE_NAME


def _unit(vector: Tensor) -> Tensor:
    """``vector`` scaled to unit length; a vector already of unit length (as samplm writes them) is kept
    as stored, so that loading and saving again writes the same bytes."""
    if abs(float(vector.norm()) - 1.0) < 1e-6:
        return vector
    return torch.nn.functional.normalize(vector, dim=0)
