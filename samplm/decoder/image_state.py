"""What a :class:`~samplm.decoder.predictor.CustomSamPredictor` remembers about its current image.

The image itself (``features``, ``original_size``, ``input_size``) stays where ``SamPredictor`` keeps it.
:class:`ImageState` keeps what makes setting it again, or switching adapters on it, cheap:

- which pixels the current embedding was computed from, and by which image encoder, so that setting the
  same image again skips the encoder;
- the SAM's encoder key (:func:`~samplm.cache.embeddings.sam_encoder_key`), while the encoder's weights
  stay as they are;
- each adapter's per-image context (its PLM's prompt-to-image keys and values), computed on the first
  prediction on an image and reused until the image, the adapter or its weights change.

Frames: embeddings are ``1 x 256 x h x w`` on SAM's grid (SAM: 64 x 64), covering the padded ``1024 x 1024``
input square; sizes are ``(H, W)`` of the original image and ``(H', W')`` after ``ResizeLongestSide``.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from ..adapter import ImageContext
from ..adapter.prompt_adapter import PromptAdapter
from ..base.bases import as_base
from ..errors import ImageError
from ..utils.fingerprint import value_bytes


class ImageState:
    """The image-state cache of one predictor on one SAM.

    Args:
        sam: the predictor's base (a ``Sam``, a ``sam2`` model or a
            :class:`~samplm.base.interface.PromptableBase`): its dense positional encoding is what the
            adapters' contexts use, its :meth:`encoder_key` the encoder key.
        encoder: its image encoder (whose weights tell whether an embedding is still valid).
    """

    def __init__(self, sam: Any, encoder: torch.nn.Module) -> None:
        self._base = as_base(sam)
        self._encoder = encoder
        # (digest of the pixels, the embedding, its version, the image encoder's state) of the last image
        self._last: tuple[str, weakref.ref[torch.Tensor], int | None, tuple[Any, ...]] | None = None
        self._encoder_key: tuple[tuple[Any, ...], str] | None = None
        self._contexts: dict[str, tuple[tuple[Any, ...], ImageContext]] = {}

    def holds(self, digest: str, features: torch.Tensor | None) -> bool:
        """Whether ``features`` (the predictor's current embedding; ``None`` if no image is set) were computed
        from an image of this :func:`image_digest` by the current image encoder, and not changed since."""
        last = self._last
        if last is None or features is None or last[0] != digest or last[1]() is not features:
            return False
        return last[2] == tensor_version(features) and last[3] == self._encoder_state()

    def remember(self, digest: str, features: torch.Tensor) -> None:
        """Record that the image encoder just made ``features`` (``1 x 256 x h x w``) from the image of
        ``digest``. Not for inference tensors, which cannot tell whether they were changed in place."""
        version = tensor_version(features)
        if version is not None:
            self._last = (digest, weakref.ref(features), version, self._encoder_state())

    def clear(self) -> None:
        """Forget the image: its digest and every adapter's context (the encoder key stays valid)."""
        self._contexts.clear()
        self._last = None

    def encoder_key(self) -> str:
        """The base's encoder key (:func:`~samplm.cache.embeddings.sam_encoder_key` for SAM 1),
        recomputed only after the image encoder's weights were moved, cast, replaced or changed in place."""
        state = self._encoder_state()
        if self._encoder_key is None or self._encoder_key[0] != state:
            self._encoder_key = (state, self._base.encoder_key())
        return self._encoder_key[1]

    def context(self, name: str, adapter: PromptAdapter, features: torch.Tensor) -> ImageContext:
        """The PLM's per-image keys/values of the adapter ``name`` on ``features`` (``1 x 256 x h x w``),
        computed once per image and adapter (again if either, or the PLM's key/value weights, changed)."""
        projections = (adapter.plm.cross_attn.k_proj, adapter.plm.cross_attn.v_proj)
        key = (
            id(features),
            tensor_version(features),
            id(adapter),
            *(tensor_version(p) for proj in projections for p in proj.parameters()),
        )
        cached = self._contexts.get(name)
        if cached is None or cached[0] != key:
            context = adapter.plm.image_context(features, self._base.dense_pe())
            self._contexts[name] = (key, context)
            return context
        return cached[1]

    def forget_context(self, name: str) -> None:
        """Drop the adapter ``name``'s context (it was added, replaced, removed or moved)."""
        self._contexts.pop(name, None)

    def _encoder_state(self) -> tuple[Any, ...]:
        """Where the image encoder's weights are and whether they changed (moved, cast, loaded)."""
        p = next(self._encoder.parameters(), None)
        return (None,) if p is None else (p.device, p.dtype, p.data_ptr(), tensor_version(p))


def image_digest(pixels: np.ndarray, image_format: str) -> str:
    """A short digest of an image's pixels (``H x W x 3`` uint8), shape and channel order."""
    digest = hashlib.blake2b(value_bytes(pixels), digest_size=16)
    digest.update(f"{pixels.shape}{image_format}".encode())
    return digest.hexdigest()


def check_resizable(transform: ResizeLongestSide, size: tuple[int, int]) -> None:
    """Raise :class:`ImageError` naming the ``(H, W)`` of an image whose shorter side rounds to 0 pixels
    when ``transform`` scales its longer side to the encoder's input."""
    target = transform.target_length
    resized = transform.get_preprocess_shape(*size, target)
    if min(resized) < 1:
        raise ImageError(
            f"image of shape {size[0]} x {size[1]} (H x W) becomes {resized[0]} x {resized[1]} when "
            f"resized to SAM's {target} px input: its aspect ratio is too extreme; crop or pad it"
        )


def checked_embedding(
    sam: Sam,
    transform: ResizeLongestSide,
    embedding: torch.Tensor,
    original_size: tuple[int, int],
    input_size: tuple[int, int] | None,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """A precomputed embedding and image size, checked against the SAM's grid and the resize.

    Args:
        sam: the SAM the embedding is for.
        transform: the predictor's ``ResizeLongestSide``.
        embedding: ``1 x 256 x h x w`` or ``256 x h x w``.
        original_size: ``(H, W)`` of the original image.
        input_size: ``(H', W')`` after the resize, or ``None``.

    Returns:
        ``(embedding 1 x 256 x h x w, (H', W'))`` (the embedding as given, with a batch axis).

    Raises:
        ValueError: the embedding is not on the SAM's grid and width, or ``input_size`` is given and is
            not ``original_size`` resized.
    """
    if embedding.dim() == 3:
        embedding = embedding[None]
    grid = tuple(sam.prompt_encoder.image_embedding_size)
    expected = (1, sam.prompt_encoder.embed_dim, *grid)
    if tuple(embedding.shape) != expected:
        raise ValueError(f"embedding must be {' x '.join(map(str, expected))}, got {tuple(embedding.shape)}")
    resized = transform.get_preprocess_shape(*original_size, transform.target_length)
    if input_size is not None and tuple(input_size) != tuple(resized):
        raise ValueError(
            f"input_size {tuple(input_size)} does not match original_size {tuple(original_size)} "
            f"resized to {transform.target_length} ({resized})"
        )
    return embedding, resized


def tensor_version(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place change counter (``None`` for inference tensors, which have none)."""
    return None if tensor.is_inference() else tensor._version
