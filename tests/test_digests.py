"""Digests that are written to disk keep their values: SAM fingerprints in adapter configs, cache keys and
checksums, weights SHA-256, and the keys `samplm segment` resumes by. Each is pinned on fixed inputs (no
random numbers), so a change to how one is computed shows here before it orphans caches, adapters or
finished images."""

from __future__ import annotations

import types

import numpy as np
import torch
from torch import nn

from samplm.cache.embeddings import encoder_key, image_key, tensor_digest
from samplm.segment import generator as auto_masks
from samplm.segment import jobs as segment
from samplm.utils.files import sha256_file
from samplm.utils.fingerprint import sam_fingerprint

FILE_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 5


def _values(n: int, offset: int = 0) -> torch.Tensor:
    """``n`` exact float64 values ``k / 64`` with ``k`` in -50..50."""
    return ((torch.arange(n, dtype=torch.int64) * 7 + offset) % 101 - 50).to(torch.float64) / 64


def _filled(module: nn.Module) -> nn.Module:
    """``module`` with every entry of its state dict set from :func:`_values` (integers x 64)."""
    with torch.no_grad():
        for i, (_, tensor) in enumerate(sorted(module.state_dict().items())):
            values = _values(tensor.numel(), i).reshape(tensor.shape)
            tensor.copy_(values if tensor.is_floating_point() else values * 64)
    return module


def _module(**buffers: torch.Tensor) -> nn.Module:
    """A linear layer (a parameter that requires grad, a nested name) and the given buffers."""
    module = nn.Module()
    module.layer = nn.Linear(3, 2)
    for name, tensor in buffers.items():
        module.register_buffer(name, tensor)
    return _filled(module)


def _sam() -> types.SimpleNamespace:
    """What :func:`sam_fingerprint` reads of a SAM: float32/float64/bfloat16, int64 and bool entries."""
    return types.SimpleNamespace(
        prompt_encoder=_module(
            counts=torch.zeros(4, dtype=torch.int64), flags=torch.zeros(3, dtype=torch.bool)
        ),
        mask_decoder=_module(
            table=torch.zeros(2, 3, 2, dtype=torch.float64), low=torch.zeros(5, dtype=torch.bfloat16)
        ),
    )


def _encoder_state() -> dict[str, torch.Tensor]:
    """A checkpoint's state dict: sampled (above 65,536 values), small and integer image-encoder entries
    and an entry outside the image encoder (not hashed)."""
    return {
        "image_encoder.blocks.0.weight": _values(3 * 100_000, 1).to(torch.float32).reshape(3, 100_000),
        "image_encoder.patch_embed.weight": _values(70_000, 2).to(torch.float32),
        "image_encoder.pos_embed": _values(2 * 3 * 4, 3).to(torch.float16).reshape(2, 3, 4),
        "image_encoder.steps": (_values(5, 4) * 64).to(torch.int64),
        "prompt_encoder.weight": _values(6, 5).to(torch.float32),
    }


def test_sam_fingerprint_is_pinned():
    assert (
        sam_fingerprint(_sam()) == "sha256:1d43ef674acf669efdbe4b2420c88a52f30c3652334a1c8dc2fefee91627d623"
    )


def test_encoder_key_is_pinned():
    key = encoder_key(
        _encoder_state(),
        image_size=1024,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    assert key == "48f23ace04b01055dffe"


def test_cache_checksums_and_image_keys_are_pinned(tmp_path):
    embedding = _values(1 * 4 * 2 * 3, 6).to(torch.float16).reshape(1, 4, 2, 3)
    assert tensor_digest(embedding) == "6021b676f02ac88c127f924ff5ca343713e7fcb48593680fcd8d8d9c9c18839a"
    path = tmp_path / "image.png"
    path.write_bytes(FILE_BYTES)
    assert image_key(path) == "7da376a7a20c065422baea60a2379513"
    assert image_key(path, (90, 120)) == "bb87b604b5440df375bee1e46fb78b05"
    assert sha256_file(path) == "87940b41624cd77ec3464e69f9ba572521d2cacdeee154e43e4b5c25692011cf"


def test_segment_resume_keys_are_pinned():
    adapter = _module(steps=torch.zeros(2, dtype=torch.int64), scale=torch.zeros(3, dtype=torch.float16))
    assert segment._digest_state(adapter) == "f4fa367458039ab5b849026e709b52c4"
    vector = _values(8, 7).to(torch.float32).numpy()
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 3), np.linspace(0, 1, 3)), axis=-1).reshape(-1, 2) / 3
    assert auto_masks._digest([vector]) == "863390a3a2064e4d"
    assert auto_masks._digest([grid, grid[:2]]) == "486ed6d99e71559a"
