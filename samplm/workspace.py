"""The SAM and the embedding cache a job works with: ``samplm embed``, ``train`` and ``eval`` share them.

Every job that reads a dataset makes the same decisions, made here once:

* **Which SAM.** :func:`build_full_sam` builds ``model_type`` with its image encoder; ``vit_h`` /
  ``vit_l`` / ``vit_b`` need their checkpoint (:func:`require_checkpoint`), samplm's small bases ship
  their weights.
* **Which cache directory.** ``cache_dir``, or :data:`DEFAULT_CACHE_DIR`; inside it one
  :class:`~samplm.cache.embeddings.EmbeddingCache` per image encoder and preprocessing.
* **Embedding missing images.** :meth:`Workspace.embed` encodes every image not yet cached (resumable).
* **With or without the image encoder.** Training and evaluation read only the cache, so
  :meth:`Workspace.model_and_cache` hands back a SAM whose image encoder is a placeholder. When every
  image is cached already, a ``vit_*`` SAM is built without its encoder at all (the cache key is
  computed from the checkpoint's weights), which saves its memory (2.5 GB for ``vit_h``).

Under a multi-process launch (``torchrun``, ``accelerate launch``) each process embeds its shard of the
missing images (:class:`~samplm.utils.ranks.Ranks`), and only the main process prints.

Example::

    workspace = Workspace("vit_h", "sam_vit_h_4b8939.pth", cache_dir="cache", device="cuda")
    sam, cache = workspace.model_and_cache([train_part, val_part])
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from segment_anything.modeling import Sam

from .base import SAM_MODEL_TYPES, build_sam, build_sam_without_image_encoder, load_state_dict
from .base.loading import CHECKPOINT_MODEL_TYPES, SAM_IMAGE_SIZE, ImageEncoderPlaceholder
from .base.parts import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from .cache.embeddings import EmbeddingCache, encoder_key
from .data import InstanceDataset
from .errors import ConfigError
from .utils.checks import first_line, printable
from .utils.ranks import Ranks, current_ranks
from .utils.settings import about
from .utils.threads import AUTO, busy_hint, thread_limit

#: Embedding cache root used when none is given.
DEFAULT_CACHE_DIR = "~/.cache/samplm/embeddings"


def require_checkpoint(model_type: str, checkpoint: str | os.PathLike[str] | None) -> None:
    """Raise ``ValueError`` if ``model_type``'s weights are not bundled (``vit_*``, SAM 2, ``hf``) and
    ``checkpoint`` is unset."""
    if model_type in CHECKPOINT_MODEL_TYPES and not checkpoint:
        raise ValueError(
            f"--checkpoint is required for --model-type {model_type} (SAM's weights are not bundled)"
        )


def build_full_sam(model_type: str, checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    """``model_type`` with its image encoder (see :func:`samplm.base.build_sam`).

    Raises:
        ConfigError: ``checkpoint`` exists but is not a ``model_type`` checkpoint (garbage, truncated,
            another model's weights); names the file and the ``--checkpoint`` option.
    """
    require_checkpoint(model_type, checkpoint)
    with checkpoint_errors(model_type, checkpoint):
        return build_sam(model_type, checkpoint)


@contextlib.contextmanager
def checkpoint_errors(model_type: str, checkpoint: str | os.PathLike[str] | None) -> Iterator[None]:
    """Turn the errors of reading a user's checkpoint (unpickling, safetensors, state-dict mismatch)
    into one :class:`ConfigError` line naming ``--checkpoint``; a missing file stays FileNotFoundError."""
    try:
        yield
    except ConfigError:
        raise  # already one line naming the option
    except (RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        if checkpoint is None:
            raise
        detail = first_line(exc)[:200]
        raise ConfigError(
            f"--checkpoint {os.fspath(checkpoint)}",
            f"cannot be loaded as a {model_type} SAM checkpoint ({detail}); check --model-type and that "
            "the file is a complete download",
        ) from exc


def default_device(device: str | None = None) -> str:
    """``device`` after checking it, or ``"cuda"`` if a GPU is available, else ``"cpu"``.

    Raises:
        ConfigError: ``device`` is not a torch device string, or names a CUDA / MPS device this
            machine does not have (the message names ``--device`` and what to use instead).
    """
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(
            "--device", f"{device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from exc
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if parsed.type == "cuda" and (parsed.index or 0) >= count:
        have = f"only {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})" if count else "no CUDA GPU"
        raise ConfigError(f"--device {device}:", f"{have} on this machine; use --device cpu or a GPU it has")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}:", "MPS is not available on this machine; use --device cpu")
    return device


@dataclass
class Workspace:
    """One base model, its checkpoint and an embedding cache root.

    Args:
        model_type: one of :data:`samplm.base.MODEL_TYPES` (``vit_b``, ``samplm_lite``,
            ``sam2.1_hiera_tiny``, ``hf``, ...).
        checkpoint: SAM checkpoint (required for ``vit_*``, SAM 2 and ``hf``).
        cache_dir: embedding cache root (default :data:`DEFAULT_CACHE_DIR`).
        device: where images are encoded.
        verbose: show progress bars and print what was embedded / reused, and (once, to stderr, when
            the SAM is loaded) :func:`~samplm.utils.threads.busy_hint`'s line on an oversubscribed machine.
        threads: at most this many CPU threads when encoding (``None`` / ``"auto"``: every thread torch
            has; see :mod:`samplm.utils.threads`).
        ranks: this process's place in a sharded launch (default: the only process).
    """

    model_type: str
    checkpoint: str | os.PathLike[str] | None = None
    cache_dir: str | os.PathLike[str] | None = None
    device: str = "cpu"
    verbose: bool = True
    threads: int | str | None = None
    ranks: Ranks = field(default_factory=Ranks)
    _hinted: bool = field(default=False, init=False, repr=False, compare=False)

    @property
    def cache_root(self) -> Path:
        """The cache root directory (``~`` expanded)."""
        return Path(self.cache_dir or DEFAULT_CACHE_DIR).expanduser()

    def embed(
        self, datasets: Sequence[InstanceDataset], sam: Sam | None = None
    ) -> tuple[Sam, EmbeddingCache]:
        """Embed every image of ``datasets`` not yet cached; returns ``(full SAM, its cache)``.

        ``sam`` (with its image encoder) is built from ``model_type`` / ``checkpoint`` unless given.
        Under a sharded launch (:attr:`ranks`) each process encodes its shard of each dataset's images,
        then the processes meet: every image is cached when this returns, on every rank.

        Raises:
            RankFailedError: another rank failed (a bad image, ...), or the ranks see different images:
                every rank stops, none waits.
        """
        self.ranks.agree([os.fspath(p) for d in datasets for p in d.image_paths()], "images")
        if sam is None:
            sam = self.ranks.together(lambda: build_full_sam(self.model_type, self.checkpoint))
        self.hint_if_busy()
        cache = self.ranks.together(lambda: EmbeddingCache.for_model(self.cache_root, sam))
        counts = self.ranks.together(lambda: [self._embed_dataset(cache, sam, d) for d in datasets])
        for dataset, *per_rank in zip(datasets, *self.ranks.gather(counts), strict=True):
            computed, reused = (sum(stats[key] for stats in per_rank) for key in ("computed", "reused"))
            self.say(f"{dataset.source}: {computed} embedded, {reused} already cached ({cache.directory})")
        return sam, cache

    def _embed_dataset(self, cache: EmbeddingCache, sam: Sam, dataset: InstanceDataset) -> dict[str, int]:
        """This rank's share of :meth:`embed` for one dataset."""
        return cache.build(
            sam,
            dataset.image_paths(),
            expected_sizes=dataset.expected_sizes(),
            device=self.device,
            progress=self.verbose,
            threads=self.threads,
            ranks=self.ranks,
        )

    def model_and_cache(self, datasets: Sequence[InstanceDataset]) -> tuple[Sam, EmbeddingCache]:
        """The SAM to train or evaluate with, without a usable image encoder, and its cache holding
        every image of ``datasets`` (missing ones are embedded first, sharded over the processes of a
        launch)."""
        found = self.ranks.together(lambda: self._fully_cached(datasets))
        if all(self.ranks.gather(found is not None)):  # the ranks decide together
            return found
        sam, cache = self.embed(datasets)
        if isinstance(sam, Sam):  # only the cache is read: drop SAM 1's encoder
            sam.image_encoder = ImageEncoderPlaceholder(sam.image_encoder.img_size)
        return sam, cache

    def _fully_cached(self, datasets: Sequence[InstanceDataset]) -> tuple[Sam, EmbeddingCache] | None:
        """A ``vit_*`` SAM built without its image encoder and its cache, if every image is cached."""
        if self.model_type not in SAM_MODEL_TYPES or not self.checkpoint:
            return None
        with checkpoint_errors(self.model_type, self.checkpoint):
            state = load_state_dict(self.checkpoint)
            key = encoder_key(
                state, image_size=SAM_IMAGE_SIZE, pixel_mean=SAM_PIXEL_MEAN, pixel_std=SAM_PIXEL_STD
            )
        cache = EmbeddingCache(self.cache_root, key)
        if any(cache.missing(d.image_paths(), d.expected_sizes()) for d in datasets):
            return None
        self.say(f"all images cached in {cache.directory}; the image encoder is not loaded")
        with checkpoint_errors(self.model_type, self.checkpoint):
            sam = build_sam_without_image_encoder(self.model_type, state_dict=state)
        self.hint_if_busy()
        return sam, cache

    def hint_if_busy(self) -> None:
        """The first time, when :attr:`verbose`: :func:`~samplm.utils.threads.busy_hint` to stderr."""
        if self.verbose and not self._hinted:
            self._hinted = True
            busy_hint(sys.stderr)

    def say(self, message: str) -> None:
        """Print ``message`` when :attr:`verbose` (e.g. only on the main process)."""
        if self.verbose:
            print(printable(message))


@dataclass(frozen=True)
class ModelSettings:
    """The base SAM, its embedding cache and device a job names (the model options of ``samplm``)."""

    model_type: str | None = field(
        default=None,
        metadata=about(
            "vit_h, vit_l, vit_b (with --checkpoint), the built-in samplm_lite or samplm_tiny, "
            "sam2.1_hiera_tiny/small/base_plus/large or sam2_hiera_* (with Meta's .pt as --checkpoint), or "
            "hf (a transformers SamModel folder or Hub id as --checkpoint)"
        ),
    )
    checkpoint: str | None = field(
        default=None,
        metadata=about(
            "SAM checkpoint (.pth, .pt or .safetensors), or with hf a SamModel folder or Hub id; required "
            "for vit_*, sam2* and hf"
        ),
    )
    cache: str | None = field(
        default=None, metadata=about(f"embedding cache directory (default {DEFAULT_CACHE_DIR})")
    )
    device: str | None = field(
        default=None, metadata=about("torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    )
    threads: str = field(
        default=AUTO,
        metadata=about(
            "at most N CPU threads in every stage; default auto: all, and one in each stage that starts "
            "while the machine is oversubscribed (load average at least the CPU count + 1). An "
            "OMP_NUM_THREADS you set caps auto (docs/cli.md#threads)"
        ),
    )

    @property
    def thread_limit(self) -> int | None:
        """``threads`` as a number (``None``: ``auto``)."""
        return thread_limit(self.threads)

    def placement(self) -> tuple[str, Ranks]:
        """``(device, ranks)``: :func:`default_device`, and this process's place in a multi-process
        launch (joined here; a bare ``cuda`` becomes this process's GPU)."""
        device = default_device(self.device)
        ranks = current_ranks(device)
        return ranks.device(device), ranks

    def workspace(self) -> Workspace:
        """The :class:`Workspace` of these settings (:meth:`placement`; only the main process of a
        multi-process launch prints)."""
        device, ranks = self.placement()
        return Workspace(
            self.model_type,
            self.checkpoint,
            cache_dir=self.cache,
            device=device,
            verbose=ranks.is_main,
            threads=self.thread_limit,
            ranks=ranks,
        )
