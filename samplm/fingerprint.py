"""A stable fingerprint of the SAM parts an adapter depends on (prompt encoder + mask decoder)."""

from __future__ import annotations

import hashlib

import torch
from segment_anything.modeling import Sam


def sam_fingerprint(sam: Sam) -> str:
    """Hash SAM's prompt encoder and mask decoder weights (not the image encoder).

    Floating-point tensors are hashed at float16 precision, so the same checkpoint gives the same
    fingerprint whether it runs in float32 or float16 and on any device.

    Returns:
        ``"sha256:<64 hex digits>"``.
    """
    digest = hashlib.sha256()
    for prefix, module in (("prompt_encoder", sam.prompt_encoder), ("mask_decoder", sam.mask_decoder)):
        for name, tensor in sorted(module.state_dict().items()):
            tensor = tensor.detach().to("cpu")
            if tensor.is_floating_point():
                tensor = tensor.to(torch.float16)
            digest.update(f"{prefix}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()
