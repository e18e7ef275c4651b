"""Image-embedding cache: SAM is frozen, so each image is encoded once and read back from disk.

Layout::

    <root>/<encoder key>/model.json             what produced the embeddings
    <root>/<encoder key>/<ab>/<image key>.safetensors
        "embedding": 1 x 256 x h x w float16 (SAM 2 also "high_res_0", "high_res_1": its decoder's
        high-resolution maps); metadata: original_size, input_size, source file, sha256 of each tensor's
        bytes ("sha256" for the embedding, "sha256:<name>" for the others), checked on every read with the
        values' finiteness

The encoder key hashes the image encoder's weights (a sampled fingerprint, cheap even for ``vit_h``)
and the preprocessing (input size, pixel mean/std), so each base has its own folder. The image key hashes
the file's bytes and the orientation used. Entries are written atomically, so an interrupted ``build``
resumes where it stopped, and a different model or preprocessing can never read another's embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from segment_anything.modeling import Sam

from ..base.bases import as_base
from ..base.interface import ImageFeatures
from ..data.images import load_image
from ..errors import DataError, MissingEmbeddingError
from ..utils.checks import first_line
from ..utils.files import atomic_write, atomic_write_text, file_digest
from ..utils.fingerprint import half_precision, update_with_state, value_bytes
from ..utils.progress import progress_bar
from ..utils.ranks import Ranks
from ..utils.threads import stage_threads, torch_threads

CACHE_FORMAT_VERSION = 1
_SAMPLED_VALUES = 1 << 16


@dataclass(frozen=True)
class CachedEmbedding:
    """One image's embedding and the sizes needed to map coordinates.

    Attributes:
        embedding: ``1 x 256 x h x w`` (float16 on disk).
        original_size: ``(H, W)`` of the image as loaded.
        input_size: ``(H', W')`` of the image in the base's input frame (SAM 1: after
            ``ResizeLongestSide``, before padding to a square; SAM 2: the whole square).
        high_res: the base's further feature maps (SAM 2: two), empty for SAM 1.
    """

    embedding: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    high_res: tuple[torch.Tensor, ...] = ()

    @property
    def features(self) -> ImageFeatures:
        """The :class:`ImageFeatures` the base's decoder takes (as stored: float16)."""
        return ImageFeatures(self.embedding, self.high_res)


def encoder_key(state: Mapping[str, torch.Tensor] | Sam, *, image_size: int, pixel_mean, pixel_std) -> str:
    """Hash of the image encoder weights (sampled: at most 65,536 values per tensor) and preprocessing.

    Args:
        state: a ``Sam`` or a checkpoint state dict (only ``image_encoder.*`` entries are used), so the
            key can be computed without building the encoder.
    """
    if isinstance(state, Sam):
        items = {f"image_encoder.{k}": v for k, v in state.image_encoder.state_dict().items()}
    else:
        items = {k: v for k, v in state.items() if k.startswith("image_encoder.")}
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "v": CACHE_FORMAT_VERSION,
                "size": image_size,
                "mean": [round(float(x), 4) for x in pixel_mean],
                "std": [round(float(x), 4) for x in pixel_std],
            }
        ).encode()
    )
    update_with_state(digest, items, label="{name}:{shape}", values=_sampled)
    return digest.hexdigest()[:20]


def _sampled(tensor: torch.Tensor) -> torch.Tensor:
    """At most :data:`_SAMPLED_VALUES` evenly strided values of ``tensor`` (flattened), at half precision."""
    flat = tensor.detach().to("cpu").reshape(-1)
    step = max(1, flat.numel() // _SAMPLED_VALUES)
    return half_precision(flat[::step][:_SAMPLED_VALUES])


def sam_encoder_key(sam: Sam) -> str:
    """:func:`encoder_key` of a built ``Sam`` (its own preprocessing constants)."""
    return encoder_key(
        sam,
        image_size=sam.image_encoder.img_size,
        pixel_mean=sam.pixel_mean.flatten().tolist(),
        pixel_std=sam.pixel_std.flatten().tolist(),
    )


def image_key(path: str | os.PathLike[str], expected_size: tuple[int, int] | None = None) -> str:
    """Hash of an image file's bytes (and of the expected size, which can change its orientation)."""
    try:
        digest = file_digest(path)
    except FileNotFoundError as exc:
        raise DataError(path, "image file does not exist") from exc
    digest.update(repr(tuple(expected_size) if expected_size else None).encode())
    return digest.hexdigest()[:32]


def tensor_digest(tensor: torch.Tensor) -> str:
    """Hex SHA-256 of a CPU tensor's bytes (the checksum stored with each cache entry)."""
    return hashlib.sha256(value_bytes(tensor)).hexdigest()


def _checksum_field(name: str) -> str:
    """The metadata field holding a stored tensor's checksum (``"sha256"`` for the embedding)."""
    return "sha256" if name == "embedding" else f"sha256:{name}"


def _check_entry_tensor(
    path: str | os.PathLike[str], entry: Path, meta: Mapping[str, str], name: str, tensor: torch.Tensor
) -> None:
    """Raise :func:`_corrupted` if a stored tensor does not match its checksum (entries written before
    checksums have none) or holds NaN or infinite values."""
    what = "the embedding" if name == "embedding" else f"tensor {name!r}"
    field = _checksum_field(name)
    if field in meta and tensor_digest(tensor) != meta[field]:
        raise _corrupted(path, entry, f"{what} does not match its checksum")
    if not bool(torch.isfinite(tensor).all()):
        raise _corrupted(path, entry, f"{what} holds NaN or infinite values")


def _corrupted(path: str | os.PathLike[str], entry: Path, problem: str) -> DataError:
    """The error for a bad cache entry: names the image and the entry file, and the fix."""
    return DataError(path, f"corrupted cache entry {entry} ({problem}); delete it and re-run `samplm embed`")


class EmbeddingCache:
    """Embeddings of one image encoder + preprocessing, stored under ``root / key``.

    Args:
        root: cache root directory (shared by all models).
        key: :func:`encoder_key` / :func:`sam_encoder_key` of the model.
    """

    def __init__(self, root: str | os.PathLike[str], key: str) -> None:
        self.root = Path(root)
        self.key = key
        self.directory = self.root / key
        self._image_keys: dict[tuple[str, tuple[int, int] | None], str] = {}

    @classmethod
    def for_model(cls, root: str | os.PathLike[str], sam: Any) -> EmbeddingCache:
        """The cache of a base (a ``Sam``, a ``sam2`` model or a base) under ``root``."""
        return cls(root, as_base(sam).encoder_key())

    def _entry(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def key_for(self, path: str | os.PathLike[str], expected_size: tuple[int, int] | None = None) -> str:
        """Image key, memoised per (path, expected size) for this cache object."""
        memo = (os.fspath(path), tuple(expected_size) if expected_size else None)
        if memo not in self._image_keys:
            self._image_keys[memo] = image_key(path, expected_size)
        return self._image_keys[memo]

    def contains(self, path: str | os.PathLike[str], expected_size: tuple[int, int] | None = None) -> bool:
        return self._entry(self.key_for(path, expected_size)).is_file()

    def get(
        self, path: str | os.PathLike[str], expected_size: tuple[int, int] | None = None
    ) -> CachedEmbedding:
        """Read an image's embedding.

        Raises:
            MissingEmbeddingError: it was never computed (also a ``KeyError``).
            DataError: the entry is unreadable, does not match its checksum (entries written before
                checksums have none) or holds NaN or infinite values; names the image and the entry.
        """
        entry = self._entry(self.key_for(path, expected_size))
        if not entry.is_file():
            raise MissingEmbeddingError(path, self.directory)
        try:
            with safe_open(str(entry), framework="pt", device="cpu") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not iterable)
            original = tuple(json.loads(meta["original_size"]))
            resized = tuple(json.loads(meta["input_size"]))
            features = ImageFeatures.from_named(tensors)
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise _corrupted(path, entry, str(exc)) from exc
        for name, tensor in tensors.items():
            _check_entry_tensor(path, entry, meta, name, tensor)
        return CachedEmbedding(features.embedding, original, resized, features.high_res)  # type: ignore[arg-type]

    @torch.no_grad()
    def build(
        self,
        sam: Any,
        images: Iterable[str | os.PathLike[str]],
        *,
        expected_sizes: Mapping[str, tuple[int, int]] | None = None,
        device: str | torch.device = "cpu",
        progress: bool = True,
        threads: int | str | None = None,
        ranks: Ranks | None = None,
    ) -> dict[str, int]:
        """Encode every image not yet cached (resumable). Returns ``{"computed": n, "reused": m}``.

        ``sam``: the base (a ``Sam``, a ``sam2`` model or a :class:`~samplm.base.interface.PromptableBase`).
        ``threads``: at most this many CPU threads (``None`` / ``"auto"``: what torch has; one on an
        oversubscribed machine, :func:`~samplm.utils.threads.stage_threads`). ``ranks``: under a sharded
        launch, this process encodes only its shard of the distinct images (:meth:`Ranks.owns`) and only
        the main process writes ``model.json``; the counts are this rank's. Each entry is written
        atomically (a rename), so ranks on several machines may share the folder and a killed run resumes.

        Raises:
            ValueError: ``sam`` does not match this cache's key.
        """
        ranks = ranks or Ranks()
        base = as_base(sam)
        if base.encoder_key() != self.key:
            raise ValueError("this SAM's image encoder or preprocessing does not match the cache key")
        if ranks.is_main:
            self._write_manifest(base)
        base.module.to(device)
        stats = {"computed": 0, "reused": 0}
        mine = ranks.shard(list(dict.fromkeys(os.fspath(item) for item in images)))
        bar = progress_bar(mine, total=len(mine), desc="embedding images", unit="img", disable=not progress)
        with torch_threads(stage_threads(threads)):
            for path in bar:
                done = self._embed_one(base, path, (expected_sizes or {}).get(path))
                stats["computed" if done else "reused"] += 1
                bar.set_postfix(stats)
        return stats

    def _embed_one(self, base: Any, path: str, expected: tuple[int, int] | None) -> bool:
        """Encode one image into its entry unless cached; whether it was encoded now."""
        entry = self._entry(self.key_for(path, expected))
        if entry.is_file():
            return False
        image = load_image(path, expected)
        try:
            pixels, input_size = base.preprocess(image)
        except ValueError as exc:  # e.g. 2 x 3000: the short side resizes to nothing
            height, width = image.shape[:2]
            raise DataError(
                path, f"cannot be resized to the base's input ({width} x {height} px): {first_line(exc)}"
            ) from exc
        features = base.encode_image(pixels)
        metadata = {
            "original_size": json.dumps(list(image.shape[:2])),
            "input_size": json.dumps(list(input_size)),
            "source": os.path.basename(path),
        }
        data = {k: v.to("cpu", torch.float16).contiguous() for k, v in features.named().items()}
        metadata.update({_checksum_field(k): tensor_digest(v) for k, v in data.items()})
        atomic_write(entry, lambda tmp: save_file(data, str(tmp), metadata=metadata))
        return True

    def _write_manifest(self, base: Any) -> None:
        manifest = self.directory / "model.json"
        if manifest.is_file():
            return
        info = {"format_version": CACHE_FORMAT_VERSION, "family": base.family, "image_size": base.image_size}
        if isinstance(base.module, Sam):
            info["pixel_mean"] = base.module.pixel_mean.flatten().tolist()
            info["pixel_std"] = base.module.pixel_std.flatten().tolist()
        info["embedding_size"] = list(base.embedding_size)
        atomic_write_text(manifest, json.dumps(info, indent=2) + "\n")

    def missing(
        self,
        images: Sequence[str | os.PathLike[str]],
        expected_sizes: Mapping[str, tuple[int, int]] | None = None,
    ) -> list[str]:
        """Images without a cached embedding."""
        return [
            os.fspath(p) for p in images if not self.contains(p, (expected_sizes or {}).get(os.fspath(p)))
        ]
