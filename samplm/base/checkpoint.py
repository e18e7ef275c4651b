"""Reading checkpoints safely: safetensors, or torch files with ``weights_only=True`` (never unpickling code).

Checkpoints are read with ``map_location="cpu"``, so CUDA-saved checkpoints load on CPU machines.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a checkpoint's state dict (``.safetensors``, or a torch file with ``weights_only=True``)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {path} does not hold a state dict")
    return dict(state)
