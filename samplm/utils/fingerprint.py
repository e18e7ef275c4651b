"""Digests of weights, tensors and arrays; SAM's fingerprint (prompt encoder + mask decoder).

Every digest of values in memory goes through :func:`update_digest` (a label, then the values' bytes) and
every digest of a state dict through :func:`update_with_state`: SAM's fingerprint below, the embedding
cache's encoder keys and checksums (:mod:`samplm.cache.embeddings`), the keys ``samplm segment``
resumes by (:mod:`samplm.segment.jobs`, :mod:`samplm.segment.generator`) and the predictor's key of the
image it holds. Files are hashed by :func:`samplm.utils.files.file_digest`. Digests that are written down
(adapter configs, cache keys and
checksums, segment records) keep their values from release to release: ``tests/test_digests.py`` pins them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch
from segment_anything.modeling import Sam


class Digest(Protocol):
    """A ``hashlib`` hash object (``hashlib.sha256()``, ``hashlib.blake2b(...)``)."""

    def update(self, data: Any, /) -> None: ...


def value_bytes(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """The bytes of ``values`` in C order (their own dtype) as a flat ``uint8`` array; a tensor is
    detached and brought to the CPU first. No copy when the values already are contiguous there."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return np.ascontiguousarray(values).reshape(-1).view(np.uint8)


def update_digest(digest: Digest, values: torch.Tensor | np.ndarray, label: str | None = None) -> None:
    """Feed ``label`` (UTF-8, when given), then the bytes of ``values`` (:func:`value_bytes`) to a digest."""
    if label is not None:
        digest.update(label.encode())
    digest.update(value_bytes(values))


def half_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` on the CPU, floating values at float16 (other dtypes unchanged): hashed this way, the same
    weights give the same digest in float32 or float16 and on any device."""
    tensor = tensor.detach().to("cpu")
    return tensor.to(torch.float16) if tensor.is_floating_point() else tensor


def update_with_state(
    digest: Digest,
    state: Mapping[str, torch.Tensor],
    *,
    label: str = "{name}",
    values: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor,
    prefix: str = "",
) -> None:
    """Feed a state dict to ``digest``, entries in name order, each as :func:`update_digest` of
    ``values(tensor)`` with ``label`` formatted with the entry's ``name`` (after ``prefix``), its ``shape``
    (a tuple, before ``values``) and the ``dtype`` of what is hashed."""
    for key in sorted(state):
        tensor = state[key].detach()
        hashed = values(tensor)
        text = label.format(name=prefix + key, shape=tuple(tensor.shape), dtype=hashed.dtype)
        update_digest(digest, hashed, text)


def sam_fingerprint(sam: Sam) -> str:
    """Hash SAM's prompt encoder and mask decoder weights (not the image encoder).

    Floating-point tensors are hashed at float16 precision, so the same checkpoint gives the same
    fingerprint whether it runs in float32 or float16 and on any device.

    Returns:
        ``"sha256:<64 hex digits>"``.
    """
    return parts_fingerprint({"prompt_encoder": sam.prompt_encoder, "mask_decoder": sam.mask_decoder})


def parts_fingerprint(parts: Mapping[str, torch.nn.Module | Mapping[str, torch.Tensor]]) -> str:
    """A base's fingerprint: the state of each part (a module, or its state dict) in the given order, each
    entry labelled ``<part>.<name>:<shape>:<dtype>`` and hashed at float16 (:func:`half_precision`).

    Returns:
        ``"sha256:<64 hex digits>"``.
    """
    digest = hashlib.sha256()
    for prefix, part in parts.items():
        state = part.state_dict() if isinstance(part, torch.nn.Module) else part
        update_with_state(
            digest, state, prefix=f"{prefix}.", label="{name}:{shape}:{dtype}", values=half_precision
        )
    return "sha256:" + digest.hexdigest()
